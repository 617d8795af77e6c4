"""Answer extraction and normalised matching, on hand-written cases."""

import pytest

from memtrain.agent.answers import exact_match, extract_boxed, f1, normalize, substring_match


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is \\boxed{Paris}.", "Paris"),
        ("\\boxed{Lyon} no wait, \\boxed{Paris}", "Paris"),
        ("\\boxed{\\text{New York}}", "\\text{New York}"),
        ("\\boxed{a {b} c}", "a {b} c"),
        ("first \\boxed{Paris} then an unclosed \\boxed{Lon", "Paris"),
        ("no box here", None),
        ("\\boxed{}", ""),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract_boxed_takes_the_last_balanced_box(text, expected):
    assert extract_boxed(text) == expected


def test_normalize_lowercases_and_strips_punctuation_articles_and_spaces():
    assert normalize("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert normalize("An apple, a pear") == "apple pear"
    assert normalize("Theatre") == "theatre"  # 'the' inside a word is not an article


def test_exact_match():
    assert exact_match("the Paris", "Paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("paris", ["London", "PARIS."]) == 1.0
    assert exact_match(None, "Paris") == 0.0


def test_substring_match_and_f1():
    assert substring_match("it is Paris, France", "paris") == 1.0
    assert substring_match("Lyon", "Paris") == 0.0
    assert substring_match("anything", "the") == 0.0  # an answer that normalises to nothing matches nothing
    assert substring_match("Paris", "Paris, France") == 1.0  # MemAgent's sub-EM counts both ways: prediction in gold
    assert substring_match("The", "Paris") == 0.0  # nor does a prediction that normalises to nothing
    assert f1("yes", "yes") == 1.0 and f1("yes it is", "yes") == 0.0  # a yes/no answer needs the exact word
    assert f1("no", "no way") == 0.0 and f1("noanswer", "noanswer") == 1.0  # ... and so does a yes/no prediction
    assert f1("New York City", "New York") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1("Boston", "New York") == 0.0
    assert f1(None, "x") == 0.0
