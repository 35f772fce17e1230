"""Continuous-batching scheduler (pure Python) and the step data it exchanges with the runner."""

from neutrino.scheduler.output import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from neutrino.scheduler.scheduler import Scheduler
from neutrino.scheduler.stop import check_stop

__all__ = ["ModelRunnerOutput", "ScheduledRequest", "Scheduler", "SchedulerOutput", "check_stop"]
