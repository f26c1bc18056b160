"""Kubernetes integration: pod identity and Events, through kubernetes-asyncio.

kubernetes-asyncio is asyncio/aiohttp; memguard is trio. Everything that
talks to the API server runs on one dedicated asyncio loop in its own thread
(bridge.py), so an API stall can never delay a guard. The pure parts (pods.py,
events.py, aggregate.py) hold no I/O.
"""
