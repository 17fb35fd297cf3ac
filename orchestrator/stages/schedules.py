"""Values that change during optimisation, threestudio-style: a number, or [start_step, start_value,
end_value, end_step] (start_value before start_step, end_value after end_step, linear in between)."""

from __future__ import annotations

from typing import Union

ScheduleValue = Union[float, tuple[float, float, float, float]]


def schedule_at(value: ScheduleValue, step: int) -> float:
    """The value of a schedule at an optimisation step."""
    if isinstance(value, (int, float)):
        return float(value)
    start_step, start, end, end_step = value
    if end_step <= start_step or step <= start_step:
        return float(start)
    if step >= end_step:
        return float(end)
    return float(start + (end - start) * (step - start_step) / (end_step - start_step))
