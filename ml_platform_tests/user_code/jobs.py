"""Two plain Dagster jobs for the run launcher's tests: one that ends, one that waits to be stopped."""

import os
import time

import dagster as dg


@dg.op
def where() -> dict:
    return {"pid": os.getpid(), "ppid": os.getppid()}


@dg.op
def wait_to_be_stopped() -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.1)


@dg.job(executor_def=dg.in_process_executor)
def quick():
    where()


@dg.job(executor_def=dg.in_process_executor)
def stuck():
    wait_to_be_stopped()
