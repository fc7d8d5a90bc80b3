"""VQA accuracy as the official VQA v2 evaluation computes it, and its answer normalisation.

**Accuracy.** A question has (usually 10) human answers. The official score of a predicted answer
averages, over each human ``i`` left out in turn, ``min(1, #other humans who gave it / 3)``
(:func:`vqa_accuracy`). With ``n`` of 10 humans giving the prediction this is
``(n * min(1, (n-1)/3) + (10-n) * min(1, n/3)) / 10``: 0, 0.3, 0.6, 0.9, then 1 from n = 4
(:func:`accuracy_from_count`). The common shorthand ``min(1, n/3)`` (:func:`vqa_soft_score`) gives
0, 1/3, 2/3, 1: equal for n = 0 and n >= 4, at most 0.1 higher in between. ALBEF's training weights
(answer count / number of answers) are a third quantity, not an accuracy.

**Normalisation** (the official evaluation, rewritten): the prediction gets

1. whitespace: newlines and tabs become spaces, ends stripped;
2. punctuation (:func:`normalize_punctuation`): each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``
   is deleted when the text has it next to a space, or the text contains a digit-comma-digit
   group (``1,000``); otherwise it becomes a space. Then every period not followed by a digit is
   deleted (``3.5`` keeps its period);
3. words (:func:`normalize_words`): lower case, split on whitespace, number words ``zero`` ..
   ``ten`` (and ``none``) become digits, the articles ``a an the`` are dropped, and contractions
   written without apostrophes get them back (``dont`` -> ``don't``, ``youd've`` -> ``you'd've``).

The human answers get step 1, and step 2 only when they do not all agree; they are never
lower-cased or mapped (the annotation files are already normalised). That asymmetry is the
official script's, kept on purpose: scores stay comparable with published numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Punctuation the official evaluation removes or turns into spaces.
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})

# The contracted forms the official evaluation restores. Each is reached from every spelling with
# exactly one of its apostrophes missing ("dont" -> "don't"; "youd've" and "you'dve" -> "you'd've").
# Forms whose apostrophe-less spelling is an ordinary word (we'd/wed, she'll/shell, ...) are absent.
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've
mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't
shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's
something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've
they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's
where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've
wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contractions() -> dict[str, str]:
    table: dict[str, str] = {}
    for word in _CONTRACTED:
        cuts = [i for i, ch in enumerate(word) if ch == "'"]
        for i in cuts:
            table[word[:i] + word[i + 1:]] = word
    # the official table maps this one the wrong way round; kept for identical scores
    table["somebody'd"] = "somebodyd"
    return table


CONTRACTIONS = _contractions()


def normalize_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_punctuation(text: str) -> str:
    """Step 2 of the official normalisation (see the module doc)."""
    out = text
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if delete_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def normalize_words(text: str) -> str:
    """Step 3: lower case, number words to digits, no articles, contractions restored."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The official normalisation of a predicted answer (steps 1-3)."""
    return normalize_words(normalize_punctuation(normalize_whitespace(text)))


def _human_answers(answers: Sequence[str]) -> list[str]:
    answers = [normalize_whitespace(a) for a in answers]
    if len(set(answers)) > 1:
        answers = [normalize_punctuation(a) for a in answers]
    return answers


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """The official VQA accuracy of one prediction against the human answers (leave-one-out mean)."""
    if not human_answers:
        raise ValueError("vqa_accuracy: a question without human answers cannot be scored")
    pred = normalize_answer(prediction)
    answers = _human_answers(human_answers)
    scores = []
    for i in range(len(answers)):
        matches = sum(1 for j, a in enumerate(answers) if j != i and a == pred)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def vqa_soft_score(prediction: str, human_answers: Sequence[str]) -> float:
    """The shorthand ``min(1, #humans who gave the prediction / 3)`` (same normalisation)."""
    pred = normalize_answer(prediction)
    return min(1.0, sum(a == pred for a in _human_answers(human_answers)) / 3)


def accuracy_from_count(matches: int, total: int = 10) -> float:
    """Closed form of :func:`vqa_accuracy` when ``matches`` of ``total`` human answers equal the prediction."""
    if not 0 <= matches <= total or total < 1:
        raise ValueError(f"accuracy_from_count: need 0 <= matches ({matches}) <= total ({total}), total >= 1")
    return (matches * min(1.0, (matches - 1) / 3) + (total - matches) * min(1.0, matches / 3)) / total
