"""The README's full-stack section names the Elasticsearch index pattern and every stored
field, so that a newcomer can query Elasticsearch or Kibana directly (issue 21)."""

import re
from pathlib import Path

from smartlogs.store.elasticsearch import index_template

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_names_the_index_pattern_and_every_stored_field():
    text = README.read_text()
    section = text[text.index("**What is in Elasticsearch.**"):]
    section = section[:section.index("\n\n")]
    assert "`smartlogs-events-*`" in section
    named = set(re.findall(r"`([@a-z_.]+)`", section))
    stored = set(index_template("smartlogs-events")["template"]["mappings"]["properties"])
    assert "words" in named  # the API's q (and Kibana's free text) match it
    assert stored <= named, sorted(stored - named)
