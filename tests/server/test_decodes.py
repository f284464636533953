"""`DecodeGate`: uploads decode in arrival order, within a memory budget and a count, and an
image's memory stays counted until its decoding thread has ended.

Plain asyncio on one loop per test; "decoders" are functions that wait on a threading event,
so a test decides when each decode finishes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from PIL import Image

from server.api.decodes import DecodeGate, Permit
from server.errors import Overloaded


def decoder(
    release: threading.Event, size: tuple[int, int] = (10, 10)
) -> Callable[[], Image.Image]:
    def work() -> Image.Image:
        release.wait(10)
        return Image.new("RGB", size)

    return work


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


def test_admits_in_arrival_order_within_the_budget() -> None:
    async def scenario() -> list[str]:
        gate, order = DecodeGate(budget_bytes=100, max_decoding=4, wait_s=5), []
        done = asyncio.Event()

        async def hold(name: str, charge: int) -> None:
            async with gate.admit(charge):
                order.append(name)
                assert gate.used <= gate.budget_bytes
                if name == "a":
                    await done.wait()

        a = asyncio.create_task(hold("a", 60))
        await settle()
        b = asyncio.create_task(hold("b", 60))  # does not fit beside a
        await settle()
        c = asyncio.create_task(hold("c", 10))  # would fit, but b came first
        await settle()
        assert order == ["a"] and gate.used == 60
        done.set()
        await asyncio.gather(a, b, c)
        assert gate.used == 0 and gate.decoding == 0
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_a_request_that_waits_too_long_gets_overloaded_with_retry_after() -> None:
    async def scenario() -> None:
        gate = DecodeGate(budget_bytes=100, max_decoding=4, wait_s=0.2)
        async with gate.admit(80):
            with pytest.raises(Overloaded) as refused:
                async with gate.admit(80):
                    pass
            assert refused.value.code == "decoder_busy" and refused.value.retry_after == 0.2
            assert "at most 4 at once" in refused.value.message
        assert gate.used == 0 and not gate._waiting

    asyncio.run(scenario())


def test_at_most_max_decoding_decode_at_once() -> None:
    async def scenario() -> None:
        gate = DecodeGate(budget_bytes=1 << 30, max_decoding=1, wait_s=5)
        first_done = threading.Event()
        held = asyncio.Event()

        async def first() -> None:
            async with gate.admit(1000) as permit:
                await permit.decode(decoder(first_done))
                await held.wait()  # decoded, not yet taken by the engine

        one = asyncio.create_task(first())
        await settle()
        second = gate.admit(1000)
        two = asyncio.create_task(second.__aenter__())
        await settle()
        assert not two.done() and gate.decoding == 1
        first_done.set()
        await asyncio.wait_for(two, 5)  # the slot frees when decoding ends, memory or not
        assert gate.decoding == 1 and gate.used == 1000 + 10 * 10 * 4
        held.set()
        await one
        await second.__aexit__(None, None, None)
        assert gate.used == 0 and gate.decoding == 0

    asyncio.run(scenario())


def test_the_charge_shrinks_to_the_image_then_is_freed_with_it() -> None:
    async def scenario() -> None:
        gate = DecodeGate(budget_bytes=1 << 20, max_decoding=4, wait_s=5)
        release = threading.Event()
        release.set()
        async with gate.admit(500_000) as permit:
            image = await permit.decode(decoder(release, (100, 50)))
            assert gate.used == 100 * 50 * 4 and gate.decoding == 0
        assert gate.used == 0
        with pytest.raises(ValueError, match="closed image"):
            image.load()  # its pixels were freed on the way out

    asyncio.run(scenario())


def test_a_request_gone_mid_decode_keeps_its_charge_until_the_thread_ends() -> None:
    async def scenario() -> None:
        gate = DecodeGate(budget_bytes=1 << 20, max_decoding=4, wait_s=5)
        release = threading.Event()
        permits: list[Permit] = []

        async def request() -> None:
            async with gate.admit(500_000) as permit:
                permits.append(permit)
                await permit.decode(decoder(release))

        task = asyncio.create_task(request())
        await settle()
        task.cancel()  # the client went away while its image decodes
        await asyncio.gather(task, return_exceptions=True)
        assert gate.used == 500_000 and gate.decoding == 1  # the thread still works
        release.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gate.used == 0:
                break
        assert gate.used == 0 and gate.decoding == 0
        image = permits[0].image
        assert image is not None
        with pytest.raises(ValueError, match="closed image"):
            image.load()

    asyncio.run(scenario())
