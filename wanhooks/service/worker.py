"""The kernel worker: one thread that does everything that waits on the kernel or the
disk (netlink dumps and writes, `nft`, sysctls, the run lock, the status document), one
call at a time and in order, so the netlink socket has one user and the event loop never
waits.  A call that needs the loop's own state asks the loop for it (`on_loop`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class KernelWorker:
    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wanhooks-kernel")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the worker; the loop goes on meanwhile."""
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def on_loop(self, fn: Callable[..., T]) -> Callable[..., T]:
        """For the worker: fn run on the event loop (the owner of what it reads), waited for.
        The loop never waits for the worker but through `await`, so this cannot deadlock."""
        loop = self._loop
        assert loop is not None, "on_loop is for calls made by the worker"

        def call(*args: Any) -> T:
            done: concurrent.futures.Future[T] = concurrent.futures.Future()

            def run() -> None:
                try:
                    done.set_result(fn(*args))
                except BaseException as exc:  # handed to the worker, which raises it
                    done.set_exception(exc)

            loop.call_soon_threadsafe(run)
            return done.result()

        return call

    def close(self) -> None:
        self._pool.shutdown()
