"""Synthetic anomalies injected into a normal stream, with the ground truth of every injection.

The normal stream is made from real log lines (for example a loghub sample): the lines
are parsed by the project's parser, spread over ``hosts`` hosts and re-timed as a Poisson
stream of ``rate`` lines per second, and the file is replayed ``passes`` times. The first
pass is a clean warm-up; the injections go into the later passes, at random places, far
enough apart not to overlap. Everything depends on ``seed`` only.

Kinds (``KINDS``), one *episode* each:

``unseen_template``  one line with a message pattern never seen (random words and a number).
``template_burst``   copies of one known, ordinary line from one host within 30 s: ``burst``
                     of them, or 3x the most that line's pattern ever had in 30 s of the
                     normal stream, if that is more (a pattern that often comes in bursts
                     needs a bigger one to be unusual).
``error_flood``      ``flood`` ERROR lines from one host within 60 s (a few error messages
                     of the kind a failing service writes).
``host_silence``     one busy host sends nothing for ``silence`` seconds; the episode is its
                     first ``3`` lines after the gap (a line-by-line detector can only notice
                     a silence when the host speaks again; the pipeline's silence incidents,
                     ``streams.silence``, notice it while it lasts: the evaluation counts
                     both).
``param_value``      a known line (of a pattern seen at least 20 times) with one number
                     changed to 10^4 x the largest value that position held in the base
                     (31337 where it only held zeros).

An episode counts as detected when at least one of its lines is flagged. The false-positive
rate is the share of normal lines after the warm-up that were flagged.
"""

from __future__ import annotations

import random
from collections import Counter
import re
from dataclasses import dataclass, field

from streams.parsing import LineParser, normalize_level
from streams.templates import TemplateMiner

__all__ = ["KINDS", "Episode", "SyntheticStream", "generate"]

KINDS = ("unseen_template", "template_burst", "error_flood", "host_silence", "param_value")

_NUMBER = re.compile(r"(?<![\w.])(\d{1,9})(?![\w.])")
_SYLLABLES = ("ka", "zo", "mi", "tru", "vel", "nop", "quin", "dra", "sef", "lux", "pim", "gor",
              "hex", "wab", "yel", "fro", "tiz", "bun", "cre", "olm")
_ERRORS = (
    "connection to upstream {h}:{n} refused",
    "I/O error on device sd{c}, logical block {n}",
    "request {n} failed: timeout after {m} ms",
    "write to journal failed: no space left on device",
    "worker {n} exited unexpectedly with status {m}",
)


@dataclass
class Episode:
    kind: str
    ids: list[int]            # the item ids that make up the episode
    detail: str = ""


@dataclass
class SyntheticStream:
    items: list[dict]
    episodes: list[Episode]
    warmup: int               # items before this index are the clean warm-up
    injected: set[int] = field(default_factory=set)  # ids of injected (or episode) items

    def normal_ids_after_warmup(self) -> list[int]:
        return [it["id"] for it in self.items[self.warmup:] if it["id"] not in self.injected]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def _base_records(lines: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(message, level, component) of each non-empty line, via the project's parser."""
    parser = LineParser()
    out = []
    for line in lines:
        if not line.strip():
            continue
        p = parser.parse(line)
        out.append((p.message, normalize_level(p.level), p.component))
    return out


def generate(
    lines: list[str],
    *,
    seed: int = 0,
    passes: int = 3,
    hosts: int = 8,
    rate: float = 2.0,
    episodes: int = 20,
    kinds: tuple[str, ...] = KINDS,
    burst: int = 60,
    flood: int = 40,
    silence: float = 600.0,
) -> SyntheticStream:
    """A normal stream from ``lines`` with ``episodes`` injections of each kind."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; expected some of {KINDS}")
    rng = random.Random(seed)
    base = _base_records(lines)
    if not base:
        raise ValueError("no lines to build a normal stream from")
    host_names = [f"host-{i + 1:02d}" for i in range(hosts)]
    n_base = len(base)
    total_normal = n_base * passes

    # where the episodes go: distinct slots in passes 2.., spaced apart
    plan: list[tuple[int, str]] = []
    slots_needed = episodes * len(kinds)
    lo, hi = n_base, total_normal - 1
    spacing = max(1, (hi - lo) // max(slots_needed, 1))
    positions = list(range(lo + spacing // 2, hi, spacing))[:slots_needed]
    if len(positions) < slots_needed:
        raise ValueError("stream too short for that many episodes; raise passes")
    order = [k for k in kinds for _ in range(episodes)]
    rng.shuffle(order)
    plan = list(zip(positions, order))
    by_pos = {p: k for p, k in plan}

    items: list[dict] = []
    eps: list[Episode] = []
    injected: set[int] = set()
    t = 1_700_000_000.0  # 2023-11-14, an arbitrary fixed start
    silent_until: dict[str, float] = {}
    pending_silence: dict[str, Episode] = {}
    # param_value changes a number in a line whose pattern (as the project's miner groups
    # the base) is common enough to have a usual range: seen at least 20 times
    miner = TemplateMiner()
    masked = [miner.mine(m).template_id for m, _lvl, _c in base]  # the pattern of each line
    common = Counter(masked)
    with_numbers = [i for i, (m, _lvl, _c) in enumerate(base)
                    if common[masked[i]] >= 20 and _NUMBER.search(m)]
    same_shape: dict[str, list[int]] = {}
    for i, mk in enumerate(masked):
        same_shape.setdefault(mk, []).append(i)
    span = max(1, int(rate * 30.0))  # base lines in 30 s of the re-timed stream
    peaks: dict[str, int] = {}

    def peak_30s(key: str) -> int:
        """The most lines of one pattern in any 30 s (``span`` lines) of the base."""
        if key not in peaks:
            pos = same_shape[key]
            best = lo_i = 0
            for hi_i in range(len(pos)):
                while pos[hi_i] - pos[lo_i] >= span:
                    lo_i += 1
                best = max(best, hi_i - lo_i + 1)
            peaks[key] = best
        return peaks[key]

    def speaking() -> list[str]:
        return [h for h in host_names if h not in silent_until and h not in pending_silence] \
            or host_names

    def add(message, host, level, component, ts, kind_ids=None):
        item = {"id": len(items), "message": message, "ts": ts, "host": host,
                "level": level, "component": component, "received": ts, "source": "synthetic"}
        items.append(item)
        if kind_ids is not None:
            kind_ids.append(item["id"])
            injected.add(item["id"])
        return item

    for k in range(total_normal):
        msg, level, comp = base[k % n_base]
        t += rng.expovariate(rate)
        host = rng.choice(host_names)
        if host in silent_until:
            if t < silent_until[host]:
                host = rng.choice([h for h in host_names if h not in silent_until])
            else:
                del silent_until[host]
        ep_sil = pending_silence.get(host)
        if ep_sil is not None and host not in silent_until:
            add(msg, host, level, comp, t, ep_sil.ids)
            if len(ep_sil.ids) >= 3:
                del pending_silence[host]
        else:
            add(msg, host, level, comp, t)

        kind = by_pos.get(k)
        if kind is None:
            continue
        ids: list[int] = []
        if kind == "unseen_template":
            words = [_word(rng) for _ in range(rng.randint(4, 8))]
            words.insert(rng.randint(1, len(words)), str(rng.randint(2, 99999)))
            t += rng.expovariate(rate)
            add(" ".join(words), rng.choice(speaking()), level or "INFO", comp, t, ids)
            eps.append(Episode(kind, ids, "new pattern"))
        elif kind == "template_burst":
            j = rng.randrange(n_base)
            bmsg, blevel, bcomp = base[j]
            h = rng.choice(speaking())
            # at least `burst` lines, and 3x the most the pattern ever had in 30 s
            size = max(burst, 3 * peak_30s(masked[j]))
            times = sorted(t + rng.uniform(0, 30.0) for _ in range(size))
            for tt in times:
                add(bmsg, h, blevel, bcomp, tt, ids)
            t = times[-1]
            eps.append(Episode(kind, ids, f"{size}x {bmsg[:60]!r} on {h} in 30 s"))
        elif kind == "error_flood":
            h = rng.choice(speaking())
            times = sorted(t + rng.uniform(0, 60.0) for _ in range(flood))
            for tt in times:
                m = rng.choice(_ERRORS).format(h=f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}",
                                               n=rng.randint(1, 99999), m=rng.randint(1, 9999),
                                               c=rng.choice("abcdef"))
                add(m, h, "ERROR", "app", tt, ids)
            t = times[-1]
            eps.append(Episode(kind, ids, f"{flood} errors on {h} in 60 s"))
        elif kind == "host_silence":
            busy = [h for h in host_names if h not in silent_until and h not in pending_silence]
            if len(busy) <= hosts // 2:  # keep at least half of the hosts speaking
                continue
            h = rng.choice(busy)
            silent_until[h] = t + silence
            ep = Episode(kind, ids, f"{h} silent for {silence:.0f} s")
            pending_silence[h] = ep
            eps.append(ep)
        elif kind == "param_value":
            if not with_numbers:
                continue
            j = rng.choice(with_numbers)
            pmsg, plevel, pcomp = base[j]
            nums = list(_NUMBER.finditer(pmsg))
            pos = rng.randrange(len(nums))
            m = nums[pos]
            seen = [int(x.group(1)) for i2 in same_shape[masked[j]]
                    for x in list(_NUMBER.finditer(base[i2][0]))[pos:pos + 1]]
            top = max(seen, default=int(m.group(1)))
            new = 31337 if top == 0 else top * 10_000 + rng.randint(1, 9)
            changed = pmsg[: m.start(1)] + str(new) + pmsg[m.end(1):]
            t += rng.expovariate(rate)
            add(changed, rng.choice(speaking()), plevel, pcomp, t, ids)
            eps.append(Episode(kind, ids, f"{m.group(1)} -> {new} (largest before: {top}) "
                                          f"in {pmsg[:60]!r}"))

    eps = [e for e in eps if e.ids]  # a silence whose host never spoke again has no lines
    return SyntheticStream(items=items, episodes=eps, warmup=n_base, injected=injected)
