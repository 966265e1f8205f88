"""How the vectorized engine cuts a round's nodes into cohort windows."""

from fedkd.client.cohort import cohort_windows


def test_windows_are_balanced_ordered_by_size_and_at_least_one_per_worker():
    sizes = [5, 1, 4, 2, 3]
    assert cohort_windows(sizes, cohort_size=16, workers=2) == [[1, 3], [4, 2, 0]]
    assert cohort_windows(sizes, cohort_size=16, workers=1) == [[1, 3, 4, 2, 0]]
    windows = cohort_windows([0] * 20, cohort_size=16, workers=2)
    assert [len(w) for w in windows] == [10, 10]  # not 16 + 4
    assert [len(w) for w in cohort_windows([0] * 40, cohort_size=16, workers=2)] == [13, 13, 14]
    assert cohort_windows([], cohort_size=16, workers=2) == []


def test_equal_sizes_keep_the_nodes_order():
    assert cohort_windows([7, 7, 7], cohort_size=2, workers=1) == [[0], [1, 2]]
