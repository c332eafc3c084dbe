"""The configured models' slots: which version each serves, how it changes, and readiness.

Each model has a :class:`Slot` holding the :class:`~ml_platform.serving.model.LoadedModel`
that answers its requests. :class:`ModelSlots` keeps the slots in step with the serving
store's champion pointers (``store.py``): a background task stats each model's
``current.json`` every ``poll_seconds`` (and ``POST /admin/reload`` asks at once); on a
change it builds the named version in a new ONNX Runtime session off the event loop,
validates it (``LoadedModel.validate``: smoke rows, shapes, latency budget) and only then
swaps the slot's reference. Requests hold their own reference, so nothing in flight is
dropped. A version that fails is rejected: the previous one keeps serving and readiness
says why. The pointer is the one source of truth: nothing else is loaded in its place.

Readiness: a model is ready when it serves exactly the version its pointer names; the
endpoint is ready when every model that has a pointer is. A pointer that is gone without the
store's tombstone (``store.unpoint`` writes one) was lost, not removed: the version serving
keeps serving, and the model is not ready until the pointer is back (``ml-platform serve``
and ``reconcile`` rebuild it from the registry and the audit).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime

from ml_platform.serving import errors
from ml_platform.serving.errors import RequestError
from ml_platform.serving.metrics import Metrics
from ml_platform.serving.model import LoadedModel, RejectedModel, load_version
from ml_platform.serving.store import ModelStore

log = logging.getLogger("ml_platform.serving")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Slot:
    """One configured model: the version serving now and what the poller has seen.

    ``pending`` is set while the pointer names a version that is not the one serving:
    ``{"version": N, "reason": ...}`` (being loaded, or rejected and why); readiness
    reports it."""

    __slots__ = ("name", "model", "pointer_sig", "last_rejection", "pending", "lock", "stage")

    def __init__(self, name: str):
        self.name = name
        self.model: LoadedModel | None = None
        self.pointer_sig = None
        self.last_rejection: dict | None = None
        self.pending: dict | None = None
        self.lock: asyncio.Lock | None = None
        self.stage = None  # a staged candidate beside the champion (``staging.Stage``), never its readiness


class ModelSlots:
    """The slots of ``models`` over ``store``; ``slots`` maps a name to its Slot."""

    def __init__(
        self,
        store: ModelStore,
        models: list[str],
        *,
        poll_seconds: float,
        latency_budget_ms: float | None,
        metrics: Metrics,
    ):
        if not models:
            raise ValueError("at least one model name is required")
        for m in models:
            store.model_dir(m)  # validates the name
        self.store = store
        self.slots = {m: Slot(m) for m in models}
        self.only = models[0] if len(models) == 1 else None  # the model of POST /invocations
        self.poll_seconds = float(poll_seconds)
        self.latency_budget_ms = None if latency_budget_ms is None else float(latency_budget_ms)
        self.metrics = metrics
        self.stages = None  # ``staging.Stages``: follows staged.json (set by the app)
        metrics.gauges = self.gauges

    def gauges(self) -> dict:
        return {n: (s.model.version if s.model else None, s.model is not None) for n, s in self.slots.items()}

    # ---------------------------------------------------------------- lookups
    def slot(self, name: str) -> Slot:
        """The slot of ``name``, or a 404 (RequestError)."""
        slot = self.slots.get(name)
        if slot is None:
            raise errors.unknown_model(name, self.slots)
        return slot

    def resolve(self, name: str | None) -> LoadedModel | RequestError:
        """-> the LoadedModel serving ``name`` (None: the only model), or the error to answer
        (counted in the metrics). The scoring path's lookup when the slot is not serving."""
        if name is None:
            if self.only is None:
                self.metrics.error("_unknown", "", "model_required")
                return errors.model_required(self.slots)
            name = self.only
        slot = self.slots.get(name)
        if slot is None:
            self.metrics.error("_unknown", "", "unknown_model")
            return errors.unknown_model(name, self.slots)
        model = slot.model
        if model is None:
            self.metrics.error(name, "", "no_champion")
            return errors.no_champion(name, slot.last_rejection)
        return model

    # ---------------------------------------------------------------- loading
    def _pointer_sig(self, name: str):
        try:
            st = os.stat(self.store.pointer_path(name))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _result(self, slot: Slot, status: str, version, reason: str | None = None) -> dict:
        return {
            "version": version,
            "status": status,
            "reason": reason,
            "serving_version": slot.model.version if slot.model else None,
        }

    def _plan(self, slot: Slot, force: bool):
        """-> None (nothing changed), ("done", result) or ("load", version, pointer)."""
        sig = self._pointer_sig(slot.name)
        if not force and sig == slot.pointer_sig:
            return None
        slot.pointer_sig = sig
        if sig is None:
            return ("done", self._pointer_gone(slot))
        try:
            ptr = self.store.current(slot.name)
        except (OSError, ValueError) as e:
            return ("done", self._reject(slot, None, f"unreadable pointer: {e}"))
        if ptr is None:
            return ("done", self._pointer_gone(slot))
        v = ptr["version"]
        if slot.model is not None and slot.model.version == v:
            slot.model.pointer = ptr
            slot.pending = None
            return ("done", self._result(slot, "unchanged", v))
        slot.pending = {"version": v, "reason": f"v{v} is being loaded"}
        return ("load", v, ptr)

    def _lost_pointer(self, name: str) -> str | None:
        """Why the champion pointer of ``name`` counts as lost, or None: it is missing, it was
        not removed on purpose (no tombstone), and versions are published."""
        if not self.store.lost(name):
            return None
        return (
            f"champion pointer {self.store.pointer_path(name)} is missing, but it was not removed by a "
            "champion move (`ml-platform serve` or `reconcile` rebuilds it from the registry)"
        )

    def _pointer_gone(self, slot: Slot) -> dict:
        """No pointer: removed on purpose -> unload; lost -> rejected like an unreadable
        pointer: the loaded version keeps serving and readiness reports it."""
        lost = self._lost_pointer(slot.name) if slot.model is not None else None
        if lost is None:
            return self._unload(slot)
        return self._reject(slot, None, lost)

    def _unload(self, slot: Slot) -> dict:
        """No pointer: no champion. A model that was serving stops (the pointer was removed
        on purpose, e.g. the first deploy of a model was rolled back)."""
        slot.pending = None
        if slot.model is None:
            return self._result(slot, "unchanged", None, "no champion published")
        old, slot.model = slot.model, None
        self.metrics.reload(slot.name, "unloaded")
        log.warning("model %s: champion pointer removed, v%s unloaded", slot.name, old.version)
        return self._result(slot, "unloaded", None, f"champion pointer removed; v{old.version} unloaded")

    def _reject(self, slot: Slot, version, reason: str) -> dict:
        slot.last_rejection = {"version": version, "reason": reason, "at": _now()}
        slot.pending = {
            "version": version,
            "reason": (f"v{version} rejected: {reason}" if version is not None else reason),
        }
        self.metrics.reload(slot.name, "rejected")
        log.error(
            "model %s v%s rejected (%s; not ready): %s",
            slot.name,
            version,
            f"v{slot.model.version} keeps serving" if slot.model else "nothing serving",
            reason,
        )
        return self._result(slot, "rejected", version, reason)

    def _accept(self, slot: Slot, model: LoadedModel) -> dict:
        model.batcher.observe = self.metrics.batch_rows(slot.name)
        old = slot.model
        slot.model = model  # the swap: one reference assignment
        slot.pending = None
        self.metrics.reload(slot.name, "loaded")
        log.info(
            "model %s v%s loaded (was %s; single-row p99 %.3f ms)",
            slot.name,
            model.version,
            f"v{old.version}" if old else "none",
            model.last_latency_ms.get("p99", float("nan")),
        )
        return self._result(slot, "loaded", model.version)

    def _load(self, slot: Slot, version: int, ptr: dict | None) -> LoadedModel:
        return load_version(self.store, slot.name, version, self.latency_budget_ms, ptr)

    def initial_load(self) -> dict:
        """Synchronous load at startup: each model's champion, exactly the version its
        pointer names. A champion that cannot be loaded (a missing or corrupt file, a failed
        validation) is rejected and reported by readiness."""
        results = {}
        for slot in self.slots.values():
            plan = self._plan(slot, force=True)
            if plan[0] == "done":
                results[slot.name] = plan[1]
                if plan[1]["status"] == "unchanged":
                    log.info("model %s: no champion published, nothing to serve", slot.name)
                continue
            _, v, ptr = plan
            try:
                results[slot.name] = self._accept(slot, self._load(slot, v, ptr))
            except RejectedModel as e:
                results[slot.name] = self._reject(slot, v, e.reason)
            except Exception as e:  # noqa: BLE001 - one broken model must not stop the others
                log.exception("loading %s v%s failed", slot.name, v)
                results[slot.name] = self._reject(slot, v, f"unexpected error: {e}")
        return results

    async def reload(self, slot: Slot, force: bool = False) -> dict | None:
        """Follow ``slot``'s pointer if it changed (``force``: read it anyway). -> the outcome,
        or None when nothing changed."""
        if slot.lock is None:
            slot.lock = asyncio.Lock()
        async with slot.lock:
            plan = self._plan(slot, force)
            if plan is None:
                return None
            if plan[0] == "done":
                return plan[1]
            _, v, ptr = plan
            try:
                model = await asyncio.to_thread(self._load, slot, v, ptr)
            except RejectedModel as e:
                return self._reject(slot, v, e.reason)
            except Exception as e:  # noqa: BLE001 - never let a bad file kill the poller
                log.exception("loading %s v%s failed", slot.name, v)
                return self._reject(slot, v, f"unexpected error: {e}")
            return self._accept(slot, model)

    async def reload_now(self, name: str | None = None) -> dict:
        """``POST /admin/reload``: read the pointer of ``name`` (None: every model) now.
        -> {model: outcome}; an unknown ``name`` is a 404 (RequestError)."""
        slots = [self.slot(name)] if name is not None else list(self.slots.values())
        out = {s.name: await self.reload(s, force=True) for s in slots}
        if self.stages is not None:
            for s in slots:
                await self.stages.follow(s, force=True)
        return out

    async def poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            for slot in self.slots.values():
                try:
                    await self.reload(slot)
                except Exception:  # noqa: BLE001
                    log.exception("polling %s failed", slot.name)

    # ---------------------------------------------------------------- readiness
    def model_readiness(self, slot: Slot) -> dict:
        """Is ``slot`` serving exactly the version its champion pointer names (read now)?
        -> {"ready", "loaded", "version" (loaded, or None), "champion" (the pointer's version,
        or None), "reason" (why not, or None), "required" (readiness waits for this model: it
        has a pointer, readable or not)}."""
        m = slot.model
        loaded = m.version if m is not None else None
        out = {
            "ready": False,
            "loaded": m is not None,
            "version": loaded,
            "champion": None,
            "reason": None,
            "required": True,
        }
        try:
            ptr = self.store.current(slot.name)
        except (OSError, ValueError) as e:
            out["reason"] = f"unreadable champion pointer: {e}"
            return out
        if ptr is None:
            lost = self._lost_pointer(slot.name)
            if lost is not None:  # required: lost, not removed
                out["reason"] = lost + (f"; v{loaded} keeps serving" if m is not None else "; nothing serving")
                return out
            out["required"] = False
            out["reason"] = "no champion published" + (f" (v{loaded} still loaded)" if m is not None else "")
            return out
        pv = out["champion"] = ptr["version"]
        if loaded == pv:
            out["ready"] = True
            return out
        pend = slot.pending
        if pend is not None and pend.get("version") == pv:
            reason = pend["reason"]
        else:
            reason = f"the champion pointer names v{pv}, which is not loaded yet"
        out["reason"] = reason + (f"; v{loaded} keeps serving" if m is not None else "; nothing serving")
        return out

    def readiness(self) -> tuple[bool, dict]:
        """Ready when every model that has a champion pointer serves exactly the pointer's
        version (a model without a pointer has nothing to wait for)."""
        models = {n: self.model_readiness(s) for n, s in self.slots.items()}
        return all(r["ready"] or not r["required"] for r in models.values()), models
