"""Renderer tests run torch on one thread: on a busy 2-core machine two threads make small ops wait on
each other (measured 10-50x slower), and the tests are small enough not to need more."""

from tests.helpers import single_thread  # noqa: F401 - one torch thread for every module here
