"""FLAN-style instruction templates for the pool: several phrasings per source, one picked per row.

Each template is a ``(user, assistant)`` pair of :meth:`str.format` strings over the fields a source's reader
produces (see :mod:`less_hf.assets.pool_sources`). The pick depends only on the row id, so rendering is
deterministic across processes and machines.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._text import stable_hash

__all__ = ["TEMPLATES", "render"]

Template = tuple[str, str]

_YES_NO = "Answer yes or no."

TEMPLATES: dict[str, tuple[Template, ...]] = {
    "boolq": (
        ("Read the passage and answer the question with yes or no.\n\nPassage: {passage}\nQuestion: {q}", "{answer}"),
        ("{passage}\n\nBased on the text above, {ql}", "{Answer}."),
        ("Question: {q}\nContext: {passage}\nIs the answer yes or no?", "{Answer}"),
        ('{passage}\n\nCan we conclude that the answer to "{q}" is yes?', "{Answer}."),
    ),
    "piqa": (
        ("Goal: {question}\n\nWhich solution achieves the goal?\n{options}", "{letter}. {answer_text}"),
        ("How would you accomplish this: {question}\n\n{options}\n\nAnswer with A or B.", "{letter}"),
        ("Pick the more sensible way to do the following.\n{question}\n{bullets}", "{answer_text}"),
    ),
    "siqa": (
        ("{passage}\n\nQuestion: {question}\n{options}\nAnswer:", "{letter}. {answer_text}"),
        ("Context: {passage}\n{question}\n\nOptions:\n{options}\n\nAnswer with the letter.", "{letter}"),
        ("{passage} {question}\n\nChoose from:\n{bullets}", "{answer_text}"),
    ),
    "openbookqa": (
        ("Complete the sentence with the best option.\n\n{question}\n{options}", "{letter}. {answer_text}"),
        ("{question}\n\nOptions:\n{options}\n\nAnswer with the letter of the correct option.", "{letter}"),
        ("Use basic science knowledge to finish this: {question}\n{bullets}", "{answer_text}"),
    ),
    "asdiv": (
        ("{passage} {question}", "{answer}"),
        ("Solve this math word problem.\n\n{passage} {question}", "The answer is {answer}."),
        ("Problem: {passage} {question}\nAnswer:", "{answer}"),
    ),
    "nq_open": (
        ("Answer the following question.\n{q}", "{answer}"),
        ("Q: {q}\nA:", "{answer}"),
        ("{q}", "{answer}"),
        ("Please answer this question: {q}", "The answer is {answer}."),
    ),
    "truthfulqa": (
        ("{question}", "{answer}"),
        ("Answer truthfully and avoid common misconceptions.\n\n{question}", "{answer}"),
        ("Q: {question}\nA:", "{answer}"),
    ),
    "logiqa": (
        ("{passage}\n\n{question}\n{options}\nAnswer:", "{letter}. {answer_text}"),
        (
            "Read the argument and answer the logic question.\n\n{passage}\n\nQuestion: {question}\n\nOptions:\n"
            "{options}\n\nAnswer with the letter of the correct option.",
            "{letter}",
        ),
        ("Passage: {passage}\n{question}\n{options}", "The answer is {letter}: {answer_text}"),
    ),
    "narrativeqa": (
        ("{passage}\n\nAnswer this question about the story: {question}", "{answer}"),
        ("Read the summary and answer the question.\n\nSummary: {passage}\n\nQuestion: {question}", "{answer}"),
        ("{passage}\n\nQ: {question}\nA:", "{answer}"),
    ),
    "xsum": (
        ("Summarize this article in one sentence.\n\n{document}", "{summary}"),
        ("{document}\n\nTL;DR:", "{summary}"),
        ("Article: {document}\n\nWhat is a one-sentence summary of this article?", "{summary}"),
        ("Write a one-line summary of the following news story.\n\n{document}", "{summary}"),
    ),
    "multilexsum": (
        ("Summarize the following description of a civil rights lawsuit.\n\n{document}", "{summary}"),
        ("{document}\n\nWrite a short summary of the case above.", "{summary}"),
    ),
    "medqa": (
        (
            "The following is a question from a medical licensing exam.\n\n{question}\n{options}\nAnswer:",
            "{letter}. {answer_text}",
        ),
        ("{question}\n\nOptions:\n{options}\n\nAnswer with the letter of the correct option.", "{letter}"),
        ("Answer this clinical vignette.\n\n{question}\n{options}", "The answer is {letter}: {answer_text}"),
    ),
    "medmcqa": (
        (
            "The following is a {subject} question from a medical entrance exam.\n\n{question}\n{options}\nAnswer:",
            "{letter}. {answer_text}",
        ),
        ("Subject: {subject}\n{question}\n\nOptions:\n{options}\n\nAnswer with the letter.", "{letter}"),
        ("{question}\n{bullets}", "{answer_text}"),
    ),
    "pubmedqa": (
        ("Context: {passage}\n\nQuestion: {q}\nAnswer with yes, no, or maybe.", "{answer}"),
        ("Read the abstract and answer the research question.\n\n{passage}\n\n{q}", "{Answer}."),
        ("{passage}\n\nBased on this study, {ql} (yes / no / maybe)", "{answer}"),
    ),
    "bigbench_abstract_narrative": (
        ("Which proverb best describes this story?\n\n{question}\n\n{options}", "{letter}. {answer_text}"),
        (
            "{question}\n\nWhich of these sayings fits the narrative above?\n{options}\nAnswer with the letter.",
            "{letter}",
        ),
        ("Story: {question}\n\nChoose the most fitting proverb:\n{bullets}", "{answer_text}"),
    ),
    "bigbench_disflqa": (
        (
            "Read the passage and answer the question. The question contains a self-correction; answer the "
            "corrected question.\n\nPassage: {passage}\nQuestion: {question}",
            "{answer}",
        ),
        ("{passage}\n\n{question}", "{answer}"),
        ("Answer with a short span from the text.\n\n{passage}\n\nQuestion: {question}\nAnswer:", "{answer}"),
    ),
    "privacy_policy": (
        (
            "Does this privacy-policy clause contain the information needed to answer the question?\n\n"
            "Clause: {passage}\nQuestion: {q}\n" + _YES_NO,
            "{answer}",
        ),
        ("Question from a user: {q}\n\nPolicy text: {passage}\n\nIs this text relevant to the question?", "{Answer}."),
        ('{passage}\n\nCan the question "{q}" be answered from the clause above? ' + _YES_NO, "{Answer}"),
    ),
    "contracts": (
        ("{passage}\n\nQuestion: {q}\n" + _YES_NO, "{answer}"),
        ("Read the contract text and answer the question.\n\nContract: {passage}\n\nQuestion: {q}", "{Answer}."),
        ("Question: {q}\n\nRelevant terms:\n{passage}\n\nAnswer (yes or no):", "{answer}"),
    ),
    "fiqa": (
        ("{question}", "{answer}"),
        ("I have a personal finance question: {question}", "{answer}"),
        ("Answer this question from a finance forum.\n\n{question}", "{answer}"),
    ),
    "legal_support": (
        (
            "Which parenthetical best supports the legal claim?\n\nClaim: {question}\n\n{options}\n\n"
            "Answer with A or B.",
            "{letter}",
        ),
        ("Legal claim: {question}\nWhich case holding supports it?\n{options}", "{letter}. {answer_text}"),
    ),
    "bbq": (
        ("{passage}\n\nQuestion: {question}\n{options}\nAnswer:", "{letter}. {answer_text}"),
        (
            "Read the context and answer without making assumptions.\n\n{passage}\n{question}\n\n{bullets}",
            "{answer_text}",
        ),
        ("Context: {passage}\n{question}\n\nOptions:\n{options}\n\nAnswer with the letter.", "{letter}"),
    ),
    "factual_summary": (
        (
            "Which sentence is a faithful summary of the sentence below?\n\n{passage}\n\n{options}\n\n"
            "Answer with A or B.",
            "{letter}",
        ),
        ("Original: {passage}\nWhich shortened version keeps the meaning?\n{options}", "{letter}. {answer_text}"),
    ),
}


def render(source: str, row_id: str, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """Render a row as chat ``messages`` with the template the row id picks among the source's templates."""
    templates = TEMPLATES[source]
    user, assistant = templates[stable_hash(row_id) % len(templates)]
    return [
        {"role": "user", "content": user.format_map(fields).strip()},
        {"role": "assistant", "content": assistant.format_map(fields).strip()},
    ]
