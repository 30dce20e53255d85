"""The `program` backend: deterministic toyworld teachers, one per trace style, with no model at all.

`ProgramGenerator(style="cot", slip_rate=0.2, seed=0)` answers toyworld prompts the way a teacher of that
style would (`tasks.toyworld.solve`): `terse` (answer only), `cot` (one line per step), `tracker` (every
variable's value restated at each step) and `noisy-cot` (cot with a wrong value, carried on, at a rate of
`slip_rate` per computed step). The toyworld question is parsed out of the LAST user message (surrounding
text such as a system prompt or an instruction is ignored); fact questions are answered from the world
built from `world_seed` / `n_people` (the same world the prompts were drawn from).

Sampling: the random stream of each sample depends only on (seed, sampling.seed, prompt text, sample
index), never on batch composition or order, so a shard regenerated after a crash is identical. A prompt
that is not a toyworld question yields a `Completion` with `finish_reason="error"` (counted as a failure).
Token counts use the tokenizer shipped with the tiny presets (or `tokenizer=` a path / tokenizer object).
"""

from __future__ import annotations

import hashlib
import random
import re
import time

from hybrid_posttrain.errors import UserError
from hybrid_posttrain.generation.base import Completion, Sampling
from hybrid_posttrain.tasks.toyworld import QUESTIONS, STYLES, Item, World, solve

_PROGRAM_RE = re.compile(r"Run the program \(all arithmetic mod 10\):\s*(.+?)\.\s*What is\s+([a-z])\s*\?")


def _question_res() -> dict[str, re.Pattern]:
    out = {}
    for attr, q in QUESTIONS.items():
        pat = re.escape(q).replace(re.escape("{name}"), r"(?P<name>[A-Z][a-z]+ [A-Z][a-z]+)")
        out[attr] = re.compile(pat)
    return out


_FACT_RES = _question_res()


def last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    raise UserError("a prompt must contain a user message")


class ProgramGenerator:
    """A toyworld teacher in one trace style (see the module docstring)."""

    def __init__(self, style: str = "cot", slip_rate: float = 0.2, seed: int = 0, world_seed: int = 0,
                 n_people: int = 240, tokenizer=None, name: str | None = None, **_ignored):
        if style not in STYLES:
            raise UserError(f"unknown program teacher style {style!r}; expected one of {', '.join(STYLES)}")
        if not 0.0 <= slip_rate <= 1.0:
            raise UserError(f"slip_rate must be within [0, 1] (got {slip_rate})")
        self.style = style
        self.slip_rate = slip_rate if style == "noisy-cot" else 0.0
        self.seed = seed
        self.name = name or f"program-{style}"
        self._world_args = (world_seed, n_people)
        self._world: World | None = None
        self._people: dict[str, object] | None = None
        self._tokenizer = tokenizer
        self._tok()  # load now, so setup time is not counted as generation time

    # --- helpers
    def _tok(self):
        if self._tokenizer is None or isinstance(self._tokenizer, str):
            from transformers import AutoTokenizer

            from hybrid_posttrain.models.presets import TOKENIZER_DIR

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer or str(TOKENIZER_DIR))
        return self._tokenizer

    def _person(self, name: str):
        if self._people is None:
            self._world = World(*self._world_args)
            self._people = {p.name: p for p in self._world.people}
        return self._people.get(name)

    def parse(self, text: str) -> Item | None:
        """The toyworld item asked in `text` (gold answer included), or None when it is not one."""
        m = _PROGRAM_RE.search(text)
        if m:
            prompt = f"Run the program (all arithmetic mod 10): {m.group(1)}. What is {m.group(2)}?"
            return Item(id="", task="programs", prompt=prompt, answer="")
        for attr, rx in _FACT_RES.items():
            m = rx.search(text)
            if m:
                person = self._person(m.group("name"))
                if person is None:
                    return None
                return Item(id="", task="facts", prompt=m.group(0), answer=getattr(person, attr),
                            meta={"attribute": attr})
        return None

    def _rng(self, sampling: Sampling, text: str, k: int) -> random.Random:
        h = hashlib.sha256(repr((self.seed, sampling.seed, text, k)).encode()).digest()
        return random.Random(int.from_bytes(h[:8], "little"))

    # --- the Generator protocol
    def generate(self, prompts: list[list[dict]], sampling: Sampling, progress: bool = True
                 ) -> list[list[Completion]]:
        from tqdm.auto import tqdm

        out: list[list[Completion]] = []
        tok = self._tok()
        for messages in tqdm(prompts, desc=self.name, disable=not progress, leave=False):
            text = last_user_text(messages)
            item = self.parse(text)
            samples = []
            for k in range(sampling.n):
                t0 = time.perf_counter()
                if item is None:
                    samples.append(Completion(text="", n_tokens=0, finish_reason="error",
                                              meta={"error": "not a toyworld question"}))
                    continue
                rng = self._rng(sampling, text, k)
                trace, slipped = solve(item, self.style, rng, self.slip_rate)
                ids = tok(trace, add_special_tokens=False)["input_ids"]
                finish = "stop"
                if len(ids) > sampling.max_new_tokens:  # a real model would be cut off here too
                    ids = ids[: sampling.max_new_tokens]
                    trace = tok.decode(ids)
                    finish = "length"
                samples.append(Completion(text=trace, n_tokens=len(ids), finish_reason=finish, token_ids=ids,
                                          meta={"slipped": slipped, "seconds": time.perf_counter() - t0}))
            out.append(samples)
        return out

    def close(self) -> None:
        pass
