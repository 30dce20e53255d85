"""Verifiers: answer extraction and grading, shared by teacher filtering, eval grading and RL rewards.

One verifier serves all three uses, so a teacher's sample, an eval item and an RL rollout are judged the
same way. Registered by name in `VERIFIERS` (recipes and suite specs refer to them by that name):

* `exact`: normalised exact match of the extracted answer (case, surrounding punctuation, spaces).
* `numeric`: numeric equality after extraction (`#### 1,234`, `\\boxed{-3.5}`, `$12`, `7 apples`).
* `math`: mathematical equivalence through math-verify (LaTeX, fractions, expressions).
* `program`: toyworld program execution (the gold is recomputed by running the program in the prompt).

A verifier is `fn(completion: str, gold: str, prompt: str) -> bool`.
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


def exact(completion: str, gold: str, prompt: str = "") -> bool:
    return verify_exact(extract_answer(completion), gold)


def numeric(completion: str, gold: str, prompt: str = "") -> bool:
    pred = parse_number(extract_answer(completion))
    ref = parse_number(gold)
    if pred is None or ref is None:
        return False
    return abs(pred - ref) <= 1e-6 * max(1.0, abs(ref))


def math_equiv(completion: str, gold: str, prompt: str = "") -> bool:
    """Mathematical equivalence via math-verify; falls back to numeric equality when it cannot parse."""
    from math_verify import parse, verify

    pred_text = extract_answer(completion)
    gold_parsed = parse(f"${gold}$") or parse(gold)
    pred_parsed = parse(f"${pred_text}$") or parse(pred_text)
    if gold_parsed and pred_parsed:
        try:
            if verify(gold_parsed, pred_parsed):
                return True
        except Exception:  # math-verify raises on exotic inputs; treat as not equivalent
            pass
    return numeric(completion, gold)


def program(completion: str, gold: str, prompt: str = "") -> bool:
    """Toyworld program execution: the gold is the value obtained by running the program in the prompt."""
    from hybrid_posttrain.tasks.toyworld import execute_program_answer

    truth = execute_program_answer(prompt) if prompt else gold
    return verify_exact(extract_answer(completion), truth)


VERIFIERS: dict[str, Callable[[str, str, str], bool]] = {
    "exact": exact,
    "numeric": numeric,
    "math": math_equiv,
    "program": program,
}


def get_verifier(name: str) -> Callable[[str, str, str], bool]:
    """The verifier called `name`; a KeyError lists the valid names (callers turn it into a UserError)."""
    if name not in VERIFIERS:
        raise KeyError(f"unknown verifier {name!r}; expected one of {', '.join(sorted(VERIFIERS))}")
    return VERIFIERS[name]
