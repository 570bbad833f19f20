"""Run per-record stages on a pool of Ray actors, each holding one teacher replica (``engine: ray``).

Each actor builds its teacher with the teacher factory inside its own process (the driver never loads
weights for these stages) and sizes torch's intra-op threads to the CPUs it was given: two processes that
each run torch with default threads on the same cores slow each other down several-fold. The driver stays
the only writer: it hands out the batches it planned, receives results as actors finish, and commits them.
A batch whose actor died (killed worker, out of memory) is re-queued on a fresh actor.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from synthforge.engine.executor import ExecutorKind, Result, process_with_retries
from synthforge.errors import UserError
from synthforge.ray_support import init_ray
from synthforge.records import Record
from synthforge.stages.base import Stage
from synthforge.teachers.base import sends_batches
from synthforge.teachers.config import TeacherSpec
from synthforge.teachers.factory import LazyTeacher, placement_group_replica, replica_devices
from synthforge.teachers.team import DEFAULT, Team


@dataclass
class RayResources:
    """Replicas and the resources each one asks Ray for (``engine: {kind: ray, replicas, num_cpus, num_gpus}``)."""

    replicas: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.num_cpus <= 0 or self.num_gpus < 0:
            raise ValueError("replicas must be >= 1, num_cpus > 0 and num_gpus >= 0")


class TeacherReplica:
    """The actor: one teacher replica, built on first use, running stages over the batches it is sent."""

    def __init__(self, spec: TeacherSpec, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.spec = spec
        self.team = Team.of(LazyTeacher(spec))  # the default teacher only (named teachers: engine local)
        self._stage: tuple[bytes, Stage] | None = None

    def process(self, number: int, plan: tuple, batch: list[Record], retries: int) -> tuple[int, list[Result]]:
        """Results of one batch; ``plan`` is the stage as plain data (``Stage.__reduce__``), rebuilt here once.
        A user error here (a file or model missing on this node) is one line naming the node."""
        try:
            return number, process_with_retries(self._rebuilt(plan), batch, self.team, retries)
        except UserError as exc:
            raise UserError(f"on Ray node {socket.gethostname()}: {exc}") from None

    def _rebuilt(self, plan: tuple) -> Stage:
        rebuild, args = plan
        key = pickle.dumps(args)
        if self._stage is None or self._stage[0] != key:
            self._stage = (key, rebuild(*args))
        return self._stage[1]

    def describe(self) -> dict[str, Any]:
        """Where and how this replica runs: process, torch threads, placement group bundles, its spec."""
        import ray
        import torch

        group = ray.util.get_current_placement_group()
        bundles = len(group.bundle_specs) if group is not None else 0
        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "bundles": bundles, "spec": self.spec}


class RayExecutor:
    """An actor pool over Ray (joins ``RAY_ADDRESS`` when set, else starts a local instance)."""

    pipelines = False  # stage by stage: the actors pace the work
    batches_in_flight = None

    def __init__(self, teacher: TeacherSpec, resources: RayResources):
        self.ray = init_ray(int(resources.replicas * resources.num_cpus), resources.num_gpus * resources.replicas)
        self.spec = teacher
        self.resources = resources
        self._remote = self.ray.remote(TeacherReplica)
        self.groups: dict[str, Any] = {}  # actor id -> placement group of a multi-device replica
        self.actors: list[Any] = []  # started on the first per-record stage (a dedup-only run needs none)
        self.restarts = 0

    def start(self) -> list[Any]:
        """The replicas, started if they are not yet."""
        if not self.actors:
            self.actors = [self._new_actor() for _ in range(self.resources.replicas)]
        return self.actors

    def _new_actor(self) -> Any:
        options, spec, group = self._placement()
        actor = self._remote.options(**options).remote(spec, max(1, int(self.resources.num_cpus)))
        if group is not None:
            self.groups[actor._actor_id.hex()] = group
        return actor

    def _release(self, actor: Any) -> None:
        """Kill an actor (if still alive) and free its placement group."""
        self.ray.kill(actor)
        group = self.groups.pop(actor._actor_id.hex(), None)
        if group is not None:
            self.ray.util.remove_placement_group(group)

    def _placement(self) -> tuple[dict[str, Any], TeacherSpec, Any]:
        """Actor options and replica spec: a replica spanning several devices (vLLM tensor/pipeline parallel)
        gets a placement group of one GPU bundle per device, its workers captured in it."""
        devices = replica_devices(self.spec)
        if devices == 1:
            return {"num_cpus": self.resources.num_cpus, "num_gpus": self.resources.num_gpus}, self.spec, None
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        cpus = max(self.resources.num_cpus, 1.0)
        group = self.ray.util.placement_group([{"GPU": 1, "CPU": cpus}] + [{"GPU": 1, "CPU": 1}] * (devices - 1))
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
        options = {"num_cpus": cpus, "num_gpus": 0, "scheduling_strategy": strategy}
        return options, placement_group_replica(self.spec), group

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the engine."""
        return {
            "kind": "ray",
            "replicas": self.resources.replicas,
            "num_cpus": self.resources.num_cpus,
            "num_gpus": self.resources.num_gpus,
            "devices_per_replica": replica_devices(self.spec),
            "actor_restarts": self.restarts,
        }

    def workers(self) -> int:
        """The cluster's CPUs the replicas don't hold: what a distributed whole-dataset stage (dedup) may use
        (0 when the replicas hold them all: the stage then runs on the driver rather than wait for them)."""
        return max(0, int(self.ray.available_resources().get("CPU", 0)))

    def submit(self, stage: Stage, batch: list[Record], team: Any, retries: int) -> Any:
        raise NotImplementedError("the Ray executor runs a stage's batches on its actors, stage by stage")

    def completed(self, actor: Any, number: int) -> None:
        """Called after each batch comes back (a hook for tests that kill an actor mid-run)."""

    def run(
        self, stage: Stage, batches: list[list[Record]], team: Any, retries: int
    ) -> Iterator[tuple[int, list[Result]]]:
        ray = self.ray
        queue = list(range(len(batches)))
        running: dict[Any, tuple[Any, int]] = {}
        idle = list(self.start())
        stage_ref = ray.put(stage.__reduce__())  # plain data: rebuilt in the actor, where errors are ours
        while queue or running:
            while queue and idle:
                actor, number = idle.pop(), queue.pop(0)
                running[actor.process.remote(number, stage_ref, batches[number], retries)] = (actor, number)
            done, _ = ray.wait(list(running), num_returns=1)
            actor, number = running.pop(done[0])
            try:
                _, results = ray.get(done[0])
            except ray.exceptions.RayActorError:
                # The actor died with this batch (killed, out of memory): a fresh actor takes it again.
                self.restarts += 1
                self._release(actor)
                self.actors = [a for a in self.actors if a is not actor]
                replacement = self._new_actor()
                self.actors.append(replacement)
                idle.append(replacement)
                queue.insert(0, number)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)  # the stage's own error (a bug, a user error): as it was
                raise (cause if isinstance(cause, Exception) else exc) from None
            idle.append(actor)
            self.completed(actor, number)
            yield number, results

    def close(self) -> None:
        """Release the actors (the Ray instance stays for the process; ``ray.shutdown`` ends it)."""
        for actor in self.actors:
            self._release(actor)
        self.actors = []


def _build(settings: RayResources | None, teacher_spec: TeacherSpec, team: Any) -> RayExecutor:
    if set(team) - {DEFAULT}:
        raise UserError(
            f"engine ray runs replicas of the pipeline's teacher: only; named teachers ({', '.join(sorted(team))}) "
            "need engine local"
        )
    teacher = team.get(DEFAULT)
    if teacher is not None and sends_batches(teacher):
        raise UserError(
            "engine ray: a teacher in batch mode keeps its submissions in the run's log, on the driver; use engine "
            "kind local (the batch API does the parallel work)"
        )
    if teacher is not None and not isinstance(teacher, LazyTeacher):
        raise UserError(
            "engine ray builds its teacher replicas from the pipeline's teacher: settings, not from an object"
        )
    return RayExecutor(teacher_spec, settings or RayResources())


EXECUTOR = ExecutorKind(
    name="ray",
    settings=RayResources,
    build=lambda settings, teacher_spec, team: _build(settings, teacher_spec, team),
    help="teacher replicas as Ray actors (pip install 'synthforge[ray]'; joins RAY_ADDRESS when set)",
)
