"""Toyworld: the embedded synthetic world used by the demo, the tests and the program teachers.

Everything is generated from a seed; nothing is downloaded.

* Knowledge: a few hundred invented people with attributes (home town, favourite colour, lucky number,
  pet). `World.corpus()` states each fact in several phrasings (the base-training text);
  `World.fact_items()` asks short-answer questions and `World.fact_mc_items()` a 4-option variant.
* Reasoning: little programs of `depth` assignments over a few variables, arithmetic mod 10
  (`a=3; b=a+4; a=b+c; ...`), asking for the final value of one variable: state tracking.
  `program_items(depth=...)` makes them; train on small depths and evaluate on larger ones.
* Traces: `solve(item, style)` writes the solution the way a teacher of that style would
  (`terse`, `cot`, `tracker`, `noisy-cot`); the program teachers in `generation/program.py` use it.

Every item carries its prompt, its gold answer and its task name; `verify(item, completion)` grades a
completion with the shared verifiers (the last `Answer: X` in the completion).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field

from hybrid_posttrain.tasks.verifiers import extract_answer, verify_exact

SYLLABLES = ["ka", "lo", "mi", "ren", "to", "vi", "sa", "nor", "bel", "du", "fa", "gri", "hol", "jun", "pe",
             "qua", "ril", "sun", "tam", "ul", "wen", "xo", "yar", "zel"]
TOWNS = ["Pellow", "Varnish", "Cobbleford", "Amberlee", "Dunmere", "Hollins", "Quarry", "Redwick", "Saltmarsh",
         "Thistle", "Umber", "Wexley", "Brindle", "Fenwick", "Galloway", "Ironside"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
PETS = ["cat", "dog", "owl", "goat", "fox", "hare", "crow", "newt"]
ATTRIBUTES = ("town", "colour", "number", "pet")
VARS = "abcd"
STYLES = ("terse", "cot", "tracker", "noisy-cot")

FACT_PHRASINGS = {
    "town": ["{name} lives in {v}.", "The home town of {name} is {v}.", "{v} is where {name} lives."],
    "colour": ["{name} likes the colour {v}.", "The favourite colour of {name} is {v}.", "{name}'s favourite colour is {v}."],
    "number": ["The lucky number of {name} is {v}.", "{name} thinks {v} is a lucky number.", "{name}'s lucky number is {v}."],
    "pet": ["{name} keeps a {v}.", "The pet of {name} is a {v}.", "{name} owns a {v} as a pet."],
}
QUESTIONS = {
    "town": "What is the home town of {name}?",
    "colour": "What is the favourite colour of {name}?",
    "number": "What is the lucky number of {name}?",
    "pet": "What pet does {name} keep?",
}
CHOICES = {"town": TOWNS, "colour": COLOURS, "number": [str(i) for i in range(10)], "pet": PETS}


@dataclass(frozen=True)
class Item:
    """One task instance: what is asked, what is right, and how to check it."""

    id: str
    task: str  # "facts", "facts-mc" or "programs"
    prompt: str
    answer: str
    meta: dict = field(default_factory=dict)
    choices: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["choices"] = list(self.choices)
        return d

    @staticmethod
    def from_dict(d: dict) -> Item:
        return Item(id=d["id"], task=d["task"], prompt=d["prompt"], answer=str(d["answer"]),
                    meta=dict(d.get("meta") or {}), choices=tuple(d.get("choices") or ()))


def _rng(seed: int, *salt: object) -> random.Random:
    h = hashlib.sha256(repr((seed,) + salt).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


@dataclass(frozen=True)
class Person:
    name: str
    town: str
    colour: str
    number: str
    pet: str


class World:
    """A deterministic world of invented people, built from `seed`."""

    def __init__(self, seed: int = 0, n_people: int = 240):
        self.seed = seed
        rng = _rng(seed, "people")
        names: set[str] = set()
        people = []
        while len(people) < n_people:
            first = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
            last = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
            name = f"{first} {last}"
            if name in names:
                continue
            names.add(name)
            people.append(Person(name, rng.choice(TOWNS), rng.choice(COLOURS), str(rng.randrange(10)),
                                 rng.choice(PETS)))
        self.people: list[Person] = people

    def corpus(self, repeats: int = 1) -> list[str]:
        """Base-training documents: one per person and phrasing round, facts in shuffled order."""
        rng = _rng(self.seed, "corpus")
        docs = []
        for r in range(repeats):
            for p in self.people:
                sentences = []
                for attr in ATTRIBUTES:
                    phr = FACT_PHRASINGS[attr][(r + rng.randrange(3)) % 3]
                    sentences.append(phr.format(name=p.name, v=getattr(p, attr)))
                rng.shuffle(sentences)
                docs.append(" ".join(sentences))
        rng.shuffle(docs)
        return docs

    def split_people(self, split: str) -> list[Person]:
        """`train` people get fact questions in SFT data; `test` people are only in the base corpus."""
        cut = int(len(self.people) * 0.75)
        return self.people[:cut] if split == "train" else self.people[cut:]

    def fact_items(self, split: str = "test", attrs: tuple[str, ...] = ATTRIBUTES) -> list[Item]:
        items = []
        for p in self.split_people(split):
            for attr in attrs:
                q = QUESTIONS[attr].format(name=p.name)
                items.append(Item(id=f"facts-{self.seed}-{split}-{p.name.replace(' ', '_')}-{attr}", task="facts",
                                  prompt=q, answer=getattr(p, attr), meta={"attribute": attr, "split": split}))
        return items

    def fact_mc_items(self, split: str = "test", attrs: tuple[str, ...] = ATTRIBUTES) -> list[Item]:
        items = []
        for p in self.split_people(split):
            for attr in attrs:
                rng = _rng(self.seed, "mc", p.name, attr)
                gold = getattr(p, attr)
                wrong = rng.sample([c for c in CHOICES[attr] if c != gold], 3)
                choices = wrong + [gold]
                rng.shuffle(choices)
                q = QUESTIONS[attr].format(name=p.name)
                items.append(Item(id=f"factsmc-{self.seed}-{split}-{p.name.replace(' ', '_')}-{attr}",
                                  task="facts-mc", prompt=q, answer=gold, choices=tuple(choices),
                                  meta={"attribute": attr, "split": split, "gold_index": choices.index(gold)}))
        return items


# ----------------------------------------------------------------------------------------------- programs

def make_program(rng: random.Random, depth: int, n_vars: int = 3) -> tuple[list[tuple[str, str]], str]:
    """A program of `depth` assignments (mod 10) and the variable asked for.

    The first n_vars statements give every variable a constant (they count towards the depth when
    depth >= n_vars); later statements are `x=y+c`, `x=y-c`, `x=y+z` or `x=y`.
    """
    names = list(VARS[:n_vars])
    steps: list[tuple[str, str]] = []
    defined: list[str] = []
    for i in range(depth):
        undefined = [v for v in names if v not in defined]
        if undefined and (i < n_vars or not defined):
            var = undefined[0]
            steps.append((var, str(rng.randrange(10))))
            defined.append(var)
            continue
        var = rng.choice(names)
        kind = rng.randrange(4)
        a = rng.choice(defined)
        if kind == 0:
            expr = f"{a}+{rng.randrange(1, 10)}"
        elif kind == 1:
            expr = f"{a}-{rng.randrange(1, 10)}"
        elif kind == 2:
            expr = f"{a}+{rng.choice(defined)}"
        else:
            expr = a
        steps.append((var, expr))
        if var not in defined:
            defined.append(var)
    query = steps[-1][0] if rng.random() < 0.5 else rng.choice(defined)
    return steps, query


def eval_expr(expr: str, env: dict[str, int]) -> int:
    """Evaluate one right-hand side of the toyworld language (mod 10); raises KeyError on an unset variable."""
    if "+" in expr:
        left, right = expr.split("+")
        return (_atom(left, env) + _atom(right, env)) % 10
    if "-" in expr:
        left, right = expr.split("-")
        return (_atom(left, env) - _atom(right, env)) % 10
    return _atom(expr, env) % 10


def _atom(tok: str, env: dict[str, int]) -> int:
    return int(tok) if tok.isdigit() else env[tok]


def run_program(steps: list[tuple[str, str]]) -> list[dict[str, int]]:
    """The environment after each step."""
    env: dict[str, int] = {}
    states = []
    for var, expr in steps:
        env = dict(env)
        env[var] = eval_expr(expr, env)
        states.append(env)
    return states


def program_text(steps: list[tuple[str, str]], query: str) -> str:
    body = "; ".join(f"{v}={e}" for v, e in steps)
    return f"Run the program (all arithmetic mod 10): {body}. What is {query}?"


def parse_program(prompt: str) -> tuple[list[tuple[str, str]], str]:
    """Inverse of `program_text`: the verifier executes the program from the prompt alone."""
    body = prompt.split(":", 1)[1].rsplit(". What is ", 1)
    steps = [tuple(s.strip().split("=", 1)) for s in body[0].split(";")]
    return [(a, b) for a, b in steps], body[1].rstrip("?").strip()


def program_items(n: int, depths: tuple[int, ...] | list[int], seed: int = 0, split: str = "test",
                  n_vars: int = 3) -> list[Item]:
    """`n` programs per depth; `split` salts the generator so train and test programs differ."""
    items = []
    for depth in depths:
        rng = _rng(seed, "programs", split, depth)
        for i in range(n):
            steps, query = make_program(rng, depth, n_vars)
            answer = str(run_program(steps)[-1][query])
            items.append(Item(id=f"prog-{seed}-{split}-d{depth}-{i}", task="programs",
                              prompt=program_text(steps, query), answer=answer,
                              meta={"depth": depth, "split": split}))
    return items


def execute_program_answer(prompt: str) -> str:
    """The answer obtained by executing the program stated in `prompt` (the program-execution verifier)."""
    steps, query = parse_program(prompt)
    return str(run_program(steps)[-1][query])


# ----------------------------------------------------------------------------------------------- traces

def solve(item: Item, style: str, rng: random.Random | None = None, slip_rate: float = 0.0,
          world: World | None = None) -> tuple[str, bool]:
    """A teacher's solution of `item` in `style`; returns (text, slipped).

    `noisy-cot` writes the cot trace but, with probability `slip_rate` per computed step, writes a wrong
    value and carries it on (so the final answer is usually wrong too): a realistic imperfect teacher.
    """
    if style not in STYLES:
        raise ValueError(f"unknown trace style {style!r}; expected one of {', '.join(STYLES)}")
    if item.task in ("facts", "facts-mc"):
        return _solve_fact(item, style), False
    steps, query = parse_program(item.prompt)
    if style == "terse":
        return f"Answer: {execute_program_answer(item.prompt)}", False
    env: dict[str, int] = {}
    lines = []
    slipped = False
    for var, expr in steps:
        val = eval_expr(expr, env)
        if style == "noisy-cot" and not expr.isdigit() and rng is not None and rng.random() < slip_rate:
            val = (val + rng.randrange(1, 10)) % 10
            slipped = True
        env[var] = val
        if style == "tracker":
            state = ", ".join(f"{k}={env[k]}" for k in sorted(env))
            lines.append(f"{var}={expr} -> {state}")
        else:
            lines.append(f"{var}={expr}" if expr.isdigit() else f"{var}={expr}={val}")
    return "\n".join(lines) + f"\nAnswer: {env[query]}", slipped


def _solve_fact(item: Item, style: str) -> str:
    attr = item.meta.get("attribute", "")
    if style == "terse":
        return f"Answer: {item.answer}"
    name = item.prompt.split(" of ")[-1].rstrip("?") if " of " in item.prompt else item.prompt
    if attr == "pet":
        name = item.prompt.removeprefix("What pet does ").removesuffix(" keep?")
    return f"The {attr} of {name} is {item.answer}.\nAnswer: {item.answer}"


def verify(item: Item, completion: str) -> bool:
    """Grade `completion` against the item: program execution for programs, exact match for facts."""
    gold = execute_program_answer(item.prompt) if item.task == "programs" else item.answer
    return verify_exact(extract_answer(completion), gold)
