"""Verifiers: answer extraction and grading, shared by teacher filtering, eval grading and RL rewards.

One verifier serves all three uses, so a teacher's sample, an eval item and an RL rollout are judged the
same way. Registered by name in `VERIFIERS` (recipes and suite specs refer to them by that name):

* `exact`: normalised exact match of the extracted answer (case, surrounding punctuation, spaces).
* `numeric`: numeric equality after extraction (`#### 1,234`, `\\boxed{-3.5}`, `$12`, `7 apples`).
* `math`: mathematical equivalence through math-verify (LaTeX, fractions, expressions).
* `program`: toyworld program execution (the gold is recomputed by running the program in the prompt).

A verifier is `fn(completion: str, gold: str, prompt: str) -> bool`.

Evals keep the extracted answer of each item, so extraction and matching are also exposed separately:
`EXTRACTORS` (name -> `fn(completion) -> str`: `answer`, `number`, `letter`, `first_line`, `raw`) and
`MATCHERS` (the same names as `VERIFIERS`, `fn(extracted, gold, prompt) -> bool`); `grade(grader,
completion, gold, prompt, extractor)` returns `(extracted, correct)`. `VERIFIERS[name](c, g, p)` equals
`MATCHERS[name](extract_answer(c), g, p)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ANSWER_RE = re.compile(r"(?:Answer|answer|ANSWER)\s*[:：]\s*(.+)")
_HASH_RE = re.compile(r"####\s*(.+)")
_THE_ANSWER_RE = re.compile(r"[Tt]he answer is[:\s]*(.+?)(?:\.\s|\.$|$)", re.M)
_NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    out = []
    while i < len(text):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return "".join(out).strip()
        out.append(ch)
        i += 1
    return None


def extract_answer(text: str) -> str:
    """The final answer of a completion: last `\\boxed{}`, else last `Answer:`, `####`, `the answer is`; else
    the last line. Returns "" for an empty completion."""
    text = text.strip()
    if not text:
        return ""
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    for rx in (_ANSWER_RE, _HASH_RE, _THE_ANSWER_RE):
        found = rx.findall(text)
        if found:
            return found[-1].strip().splitlines()[0].strip()
    return text.splitlines()[-1].strip()


def normalize(ans: str) -> str:
    ans = ans.strip().strip(".").strip()
    ans = re.sub(r"\s+", " ", ans)
    return ans.lower().strip("\"'` ")


def parse_number(text: str) -> float | None:
    """The last number in `text` (commas as thousands separators, a leading $ or trailing unit ignored)."""
    found = _NUMBER_RE.findall(text.replace("−", "-"))
    if not found:
        return None
    tok = found[-1].replace(",", "").replace("$", "")
    try:
        return float(tok)
    except ValueError:
        return None


def verify_exact(pred: str, gold: str) -> bool:
    return normalize(pred) == normalize(gold) and normalize(gold) != ""


def numbers_equal(pred: str, gold: str, prompt: str = "") -> bool:
    """Numeric equality of an extracted answer and the gold (last number of each; relative tolerance 1e-6)."""
    p = parse_number(pred)
    ref = parse_number(gold)
    if p is None or ref is None:
        return False
    return abs(p - ref) <= 1e-6 * max(1.0, abs(ref))


def math_equal(pred: str, gold: str, prompt: str = "") -> bool:
    """Mathematical equivalence of an extracted answer and the gold via math-verify; numeric fallback."""
    from math_verify import parse, verify

    try:
        gold_parsed = parse(f"${gold}$") or parse(gold)
        pred_parsed = parse(f"${pred}$") or parse(pred)
        if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed):
            return True
    except Exception:  # math-verify raises on exotic inputs; treat as not equivalent
        pass
    return numbers_equal(pred, gold)


def program_equal(pred: str, gold: str, prompt: str = "") -> bool:
    """Toyworld program execution: the gold is recomputed by running the program stated in `prompt`."""
    from hybrid_posttrain.tasks.toyworld import execute_program_answer

    truth = gold
    if prompt:
        try:
            truth = execute_program_answer(prompt)
        except (ValueError, KeyError, IndexError):  # the prompt holds no toyworld program: trust the gold
            truth = gold
    return verify_exact(pred, truth)


def exact(completion: str, gold: str, prompt: str = "") -> bool:
    return verify_exact(extract_answer(completion), gold)


def numeric(completion: str, gold: str, prompt: str = "") -> bool:
    return numbers_equal(extract_answer(completion), gold)


def math_equiv(completion: str, gold: str, prompt: str = "") -> bool:
    """Mathematical equivalence via math-verify; falls back to numeric equality when it cannot parse."""
    return math_equal(extract_answer(completion), gold)


def program(completion: str, gold: str, prompt: str = "") -> bool:
    """Toyworld program execution: the gold is the value obtained by running the program in the prompt."""
    return program_equal(extract_answer(completion), gold, prompt)


VERIFIERS: dict[str, Callable[[str, str, str], bool]] = {
    "exact": exact,
    "numeric": numeric,
    "math": math_equiv,
    "program": program,
}

# graders of an already-extracted answer, by the same names as VERIFIERS
MATCHERS: dict[str, Callable[[str, str, str], bool]] = {
    "exact": lambda pred, gold, prompt="": verify_exact(pred, gold),
    "numeric": numbers_equal,
    "math": math_equal,
    "program": program_equal,
}


def get_verifier(name: str) -> Callable[[str, str, str], bool]:
    """The verifier called `name`; a KeyError lists the valid names (callers turn it into a UserError)."""
    if name not in VERIFIERS:
        raise KeyError(f"unknown verifier {name!r}; expected one of {', '.join(sorted(VERIFIERS))}")
    return VERIFIERS[name]


# ------------------------------------------------------------------------------------------- extractors

_LETTER_RE = re.compile(r"\(([A-Z])\)|\b([A-Z])\b")


def extract_number(text: str) -> str:
    """The last number of the final answer (`#### 1,234` -> `1234`, `-3.50 m` -> `-3.5`), else ""."""
    n = parse_number(extract_answer(text))
    if n is None:
        return ""
    return str(int(n)) if n == int(n) else repr(n)


def extract_letter(text: str) -> str:
    """A multiple-choice letter from the final answer: `(B)`, `B.`, `the answer is C` -> `(B)`/`B`/`C`, kept
    in the form written (BBH golds are `(B)`); "" when none."""
    ans = extract_answer(text)
    found = _LETTER_RE.findall(ans)
    parens = [p for p, _ in found if p]
    if parens:  # `(B)` is unambiguous; a bare capital may be the word "I"
        return f"({parens[-1]})"
    bares = [b for _, b in found if b]
    return bares[-1] if bares else ""


def extract_first_line(text: str) -> str:
    """The first non-empty line (for short-answer prompts that expect the answer right away)."""
    for line in text.strip().splitlines():
        if line.strip():
            return extract_answer(line)
    return ""


EXTRACTORS: dict[str, Callable[[str], str]] = {
    "answer": extract_answer,
    "number": extract_number,
    "letter": extract_letter,
    "first_line": extract_first_line,
    "raw": lambda text: text.strip(),
}


def grade(grader: str, completion: str, gold: str, prompt: str = "", extractor: str = "answer"
          ) -> tuple[str, bool]:
    """(extracted answer, correct) of `completion` under the named extractor and grader."""
    if grader not in MATCHERS:
        raise KeyError(f"unknown grader {grader!r}; expected one of {', '.join(sorted(MATCHERS))}")
    if extractor not in EXTRACTORS:
        raise KeyError(f"unknown extractor {extractor!r}; expected one of {', '.join(sorted(EXTRACTORS))}")
    extracted = EXTRACTORS[extractor](completion)
    return extracted, bool(MATCHERS[grader](extracted, gold, prompt))
