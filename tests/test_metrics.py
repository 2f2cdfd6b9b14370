import numpy as np
import pytest

from hpccl.continual.metrics import average_accuracy, backward_transfer, forgetting, format_matrix

NAN = np.nan
ACC = np.array([[0.9, NAN, NAN],
                [0.6, 0.8, NAN],
                [0.3, 0.7, 1.0]])


def test_average_accuracy():
    assert average_accuracy(ACC) == pytest.approx([0.9, 0.7, (0.3 + 0.7 + 1.0) / 3])


def test_forgetting_uses_best_previous_accuracy():
    # after task 2: task 0 fell from its best 0.9 to 0.3, task 1 from 0.8 to 0.7
    assert forgetting(ACC) == pytest.approx([0.0, 0.3, (0.6 + 0.1) / 2])


def test_backward_transfer():
    assert backward_transfer(ACC) == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)
    assert backward_transfer(ACC[:1, :1]) == 0.0


def test_format_matrix_leaves_future_tasks_blank():
    text = format_matrix(ACC)
    assert "90.0" in text and "100.0" in text and "nan" not in text
