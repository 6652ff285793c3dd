"""Waiting inside a request for a change on the live hub, until the client hangs up.

Example:
    ```python
    with hub.subscribe(ALERTS_CHANNEL) as subscription:
        woken = await change_or_hang_up(request, subscription, 25.0)
    ```
"""

import asyncio


async def _gone(request):
    """Returns once the client has hung up (its request has no body left to read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def change_or_hang_up(request, subscription, timeout):
    """True on a change on `subscription`, False after `timeout` s, None once the client is gone."""
    change = asyncio.ensure_future(subscription.wait(timeout))
    gone = asyncio.ensure_future(_gone(request))
    try:
        await asyncio.wait((change, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        change.cancel()
        gone.cancel()
    if gone.done() and not gone.cancelled():
        return None
    return change.result()
