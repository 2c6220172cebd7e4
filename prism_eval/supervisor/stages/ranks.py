"""Supervisor: the ranks check — the miner's train(ctx) at world size N, on CPU with gloo.

The score always comes from one rank (the train stage): a stream split across ranks would make
the score depend on N. This check shows that the loop also works distributed, and it runs after
the audit, so nothing a rank sees or leaves behind can reach the scored run.

N sandboxed workers share one private network namespace: rank 0 makes it, and the others join
it through descriptors the supervisor opens while rank 0 is its live, unreaped child, so
loopback TCP between ranks never reaches the host. The stream is the start of the scored
stream, cut into batches of the geometry the ranks ask for; batch i goes to rank i mod N, one
at a time when the rank asks for it. Nothing is scored here (the score is the train stage's), so
the ranks commit no weights. The check passes when every rank reaches the end of its shard, all
ranks end with byte-identical weights, and only rank 0 wrote to its artifacts dir.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prism_eval.errors import EvaluatorError, Failed, PrismError
from prism_eval.protocol import JobSpec, LayerReport, ProtocolError, StreamAccepted, StreamOpen
from prism_eval.supervisor.attest import RankFigures, RanksCheck, isolation_record
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.data import (
    BatchProducer,
    Document,
    PackedBatch,
    StreamTally,
    Tokenizer,
    pack_batches,
)
from prism_eval.supervisor.sandbox import (
    QuotaExceeded,
    Spawner,
    WorkerProcess,
    WorkerTimeout,
    lost_worker_error,
    start_job,
)
from prism_eval.supervisor.stages import _serving as serving
from prism_eval.supervisor.stages._capture import Limits
from prism_eval.supervisor.stages.final_weights import final_weights_cap, read_final_weights

MIN_BATCHES_PER_RANK = 2
FINAL_WEIGHTS = "final.safetensors"


@dataclass(frozen=True)
class RankJob:
    """One rank's job and its scratch dir (its artifacts dir is in the spec)."""

    spec: JobSpec
    scratch_dir: Path

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.spec.artifacts_dir)


def shard_batches(
    batches: Iterable[PackedBatch], nproc: int, byte_budget: int
) -> list[list[PackedBatch]]:
    """Batch i to rank i mod nproc, the same count for every rank (collectives need it): at
    least MIN_BATCHES_PER_RANK each and `byte_budget` bytes in all, unless the data ends."""
    taken: list[PackedBatch] = []
    spent = 0
    for batch in batches:
        taken.append(batch)
        spent += batch.bytes
        enough = spent >= byte_budget and len(taken) >= nproc * MIN_BATCHES_PER_RANK
        if enough and len(taken) % nproc == 0:
            break
    usable = len(taken) - len(taken) % nproc
    return [taken[rank:usable:nproc] for rank in range(nproc)]


def as_rank_error(error: PrismError, rank: int) -> PrismError:
    """The same verdict under this stage's rule ids (`train.exception` → `ranks.exception`),
    saying which rank it was."""
    rule = "ranks." + error.rule_id.split(".", 1)[-1]
    return type(error)(
        rule, f"rank {rank}: {error.message}", hint=error.hint, evidence=error.evidence
    )


def _geometry(request: StreamOpen) -> tuple[int, int, str]:
    return request.batch_size, request.seq_len, request.tokenizer


class SharedStream:
    """The ranks' one stream: cut when the first rank asks; every rank must ask alike."""

    def __init__(
        self,
        spec: JobSpec,
        documents: Iterable[Document],
        tokenizer: Tokenizer,
        nproc: int,
        config: EvalConfig,
    ) -> None:
        self._spec, self._documents, self._tokenizer = spec, documents, tokenizer
        self._nproc, self._byte_budget = nproc, config.ranks_byte_budget
        self._block_batches = config.stream_block_batches
        self._lock = threading.Lock()
        self.request: StreamOpen | None = None
        self.shards: list[list[PackedBatch]] = []

    def check(self, request: StreamOpen) -> None:
        """Accept the first request (cutting the shards) and the same geometry after it."""
        serving.check_geometry(request, self._spec)  # bounds, every rank
        tokenizer = serving.stream_tokenizer(request.tokenizer, self._tokenizer)
        with self._lock:
            first = self.request
            if first is None:
                self.shards = self._cut(request, tokenizer)
                self.request = request
            elif _geometry(request) != _geometry(first):
                raise Failed(
                    "ranks.geometry_mismatch",
                    f"asked for {request.tokenizer} batches of {request.batch_size} × "
                    f"{request.seq_len}, another rank for {first.tokenizer} batches of "
                    f"{first.batch_size} × {first.seq_len}",
                    hint="call ctx.iter_train_batches with the same batch_size, seq_len and "
                    "tokenizer on every rank",
                )

    def _cut(self, request: StreamOpen, tokenizer: Tokenizer) -> list[list[PackedBatch]]:
        batches = pack_batches(
            self._documents,
            tokenizer,
            batch_size=request.batch_size,
            seq_len=request.seq_len,
            byte_budget=2**62,  # shard_batches decides where to stop
            tally=StreamTally(),
            block_batches=self._block_batches,
        )
        try:
            shards = shard_batches(batches, self._nproc, self._byte_budget)
        finally:
            batches.close()  # the document reader's files
        if not shards[0]:
            raise EvaluatorError(
                "ranks.too_little_data",
                f"the train split holds fewer than {self._nproc} batches of "
                f"{request.batch_size} × {request.seq_len}",
            )
        return shards


def _namespace_link(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def open_namespaces(rank0: WorkerProcess) -> tuple[int | None, int]:
    """Descriptors of rank 0's network namespace (and user namespace, when it made one).

    Rank 0 is our child and is not reaped before this returns, so its pid cannot name another
    process. A rank 0 still in our network namespace means the layer did not hold: the ranks
    would then talk TCP on the host's network, so the check stops instead.
    """
    if _namespace_link(rank0.pid, "net") == _namespace_link("self", "net"):
        raise EvaluatorError(
            "ranks.no_private_network",
            "rank 0 has no network namespace of its own, so ranks would talk TCP on the host's "
            "network",
            hint="run where network namespaces work (see the network_namespace row of "
            "`prism-eval doctor`), or use --nproc 1",
        )
    user = None
    if _namespace_link(rank0.pid, "user") != _namespace_link("self", "user"):
        user = os.open(f"/proc/{rank0.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    return user, os.open(f"/proc/{rank0.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class _Ranks:
    """The N workers of one check: started, driven one thread each, killed together."""

    def __init__(
        self, config: EvalConfig, stream: SharedStream, deadline: float, spawner: Spawner | None
    ) -> None:
        self.config, self.stream, self.deadline = config, stream, deadline
        self.spawner = spawner
        self.workers: list[WorkerProcess] = []
        self.rank0_layers: list[LayerReport] = []
        self.rank0_network = ""
        self._lock = threading.Lock()
        self._aborted = False
        self.first_error: PrismError | None = None

    def start(self, job: RankJob) -> WorkerProcess:
        worker, _, layers = start_job(job.spec, job.scratch_dir, self.config, spawner=self.spawner)
        with self._lock:
            self.workers.append(worker)
            if self._aborted:  # another rank already ended the check
                worker.kill()
                raise Failed("ranks.aborted", "stopped: another rank ended the check")
        if job.spec.rank == 0:
            self.rank0_layers = layers
            return worker
        try:  # Ready came after seccomp: the worker can no longer change namespace
            network = _namespace_link(worker.pid, "net")
        except OSError as exc:
            raise Failed("ranks.worker_died", f"ended right after it started ({exc})") from exc
        if network != self.rank0_network:
            raise EvaluatorError("ranks.namespace_mismatch", "not in rank 0's network namespace")
        return worker

    def abort(self, error: PrismError) -> None:
        """Keep the first error (later ones are its echoes) and kill every rank."""
        with self._lock:
            if self._aborted:
                return
            self._aborted, self.first_error = True, error
            workers = list(self.workers)
        for worker in workers:
            worker.kill()

    def run_rank(self, job: RankJob, worker: WorkerProcess) -> list[PackedBatch]:
        """Drive one rank through its shard; any error ends the whole check."""
        try:
            return self._drive(job, worker)
        except (WorkerTimeout, ProtocolError, QuotaExceeded) as exc:
            self.abort(as_rank_error(lost_worker_error("ranks", worker, exc), job.spec.rank))
        except PrismError as exc:
            self.abort(as_rank_error(exc, job.spec.rank))
        except Exception as exc:  # a bug of ours: stop every rank, report it as ours
            traceback.print_exc(file=sys.stderr)
            self.abort(
                EvaluatorError("internal.bug", f"rank {job.spec.rank}: {type(exc).__name__}: {exc}")
            )
        return []

    def _drive(self, job: RankJob, worker: WorkerProcess) -> list[PackedBatch]:
        spec, config = job.spec, self.config
        watch = serving.artifacts_watch(job.artifacts_dir, config)
        limits = Limits(self.deadline, config.idle_timeout_s, watch)
        request = serving.await_stream_open(worker, spec, limits)
        serving.refusing(worker, lambda: self.stream.check(request))
        worker.send(StreamAccepted(batch_size=request.batch_size, seq_len=request.seq_len))
        shard = self.stream.shards[spec.rank]
        producer = BatchProducer(iter(shard))
        served: list[PackedBatch] = []
        try:
            tally = StreamTally(stopped_by="budget")
            shard_bytes = sum(batch.bytes for batch in shard)
            serving.serve_batches(worker, spec, limits, producer, tally, shard_bytes, served.append)
            watch()
        finally:
            producer.close()
        worker.close()
        return served


def _start_and_run(ranks: _Ranks, job: RankJob) -> list[PackedBatch]:
    try:
        worker = ranks.start(job)
    except PrismError as exc:
        ranks.abort(as_rank_error(exc, job.spec.rank))
        return []
    return ranks.run_rank(job, worker)


def run_ranks_check(
    jobs: list[RankJob],
    config: EvalConfig,
    spawner: Spawner | None,
    *,
    documents: Iterable[Document],
    tokenizer: Tokenizer,
) -> RanksCheck:
    """Run train(ctx) as len(jobs) ranks; raise Failed/EvaluatorError when the check fails."""
    started = time.monotonic()
    nproc = len(jobs)
    stream = SharedStream(jobs[0].spec, documents, tokenizer, nproc, config)
    ranks = _Ranks(config, stream, started + config.train_timeout_s, spawner)
    try:
        rank0 = ranks.start(jobs[0])
    except PrismError as exc:
        raise as_rank_error(exc, 0) from exc
    try:
        user_fd, net_fd = open_namespaces(rank0)
        ranks.rank0_network = _namespace_link(rank0.pid, "net")
    except (PrismError, OSError) as exc:
        rank0.kill()
        if isinstance(exc, PrismError):
            raise
        why = f"rank 0 ended before the others started ({exc})"
        raise Failed("ranks.worker_died", why) from exc
    try:
        joiners = [_joining(job, user_fd, net_fd) for job in jobs[1:]]
        with ThreadPoolExecutor(nproc, thread_name_prefix="prism-rank") as pool:
            first = pool.submit(ranks.run_rank, jobs[0], rank0)
            others = [pool.submit(_start_and_run, ranks, job) for job in joiners]
            shards = [first.result(), *(future.result() for future in others)]
    finally:
        for fd in (user_fd, net_fd):
            if fd is not None:
                os.close(fd)
    if ranks.first_error is not None:
        raise ranks.first_error
    return _verdict(jobs, ranks, shards, time.monotonic() - started)


def _joining(job: RankJob, user_fd: int | None, net_fd: int) -> RankJob:
    """A rank ≥ 1's job: join rank 0's namespaces through the inherited descriptors."""
    sandbox = job.spec.sandbox.model_copy(
        update={"join_user_namespace_fd": user_fd, "join_network_namespace_fd": net_fd}
    )
    spec = job.spec.model_copy(update={"sandbox": sandbox})
    return RankJob(spec, job.scratch_dir)


def _verdict(
    jobs: list[RankJob], ranks: _Ranks, shards: list[list[PackedBatch]], seconds: float
) -> RanksCheck:
    """Only rank 0 wrote; every rank saved the same weights."""
    for job in jobs[1:]:
        extra = sorted(set(os.listdir(job.artifacts_dir)) - {FINAL_WEIGHTS})
        if extra:
            raise Failed(
                "ranks.nonzero_rank_wrote",
                f"rank {job.spec.rank} wrote {', '.join(extra[:5])} to ctx.artifacts_dir; only "
                "rank 0 may write",
                hint="guard checkpoints and logs with `if ctx.rank == 0:`",
            )
    digests = []
    for job in jobs:
        cap = final_weights_cap(job.spec.max_params)
        try:
            saved = read_final_weights(job.artifacts_dir / FINAL_WEIGHTS, cap)
        except PrismError as exc:
            raise as_rank_error(exc, job.spec.rank) from exc
        digests.append(saved.final_weights_sha256)
    if len(set(digests)) != 1:
        differing = next(rank for rank, digest in enumerate(digests) if digest != digests[0])
        raise Failed(
            "ranks.diverged",
            f"the ranks ended with different weights: rank 0 {digests[0][:16]}…, rank "
            f"{differing} {digests[differing][:16]}…",
            hint="average gradients across ranks (DistributedDataParallel, or all_reduce) so "
            "every rank takes the same steps",
        )
    request = ranks.stream.request
    assert request is not None
    peaks = [w.peak_memory_bytes for w in ranks.workers if w.peak_memory_bytes is not None]
    return RanksCheck(
        nproc=len(jobs),
        backend="gloo",
        device="cpu",
        batch_size=request.batch_size,
        seq_len=request.seq_len,
        ranks=[
            RankFigures(
                rank=rank,
                batches=len(served),
                tokens=sum(b.predicted_tokens for b in served),
                bytes=sum(b.bytes for b in served),
            )
            for rank, served in enumerate(shards)
        ],
        final_weights_sha256=digests[0],
        isolation=isolation_record(ranks.rank0_layers, []),
        wall_seconds=round(seconds, 3),
        peak_memory_bytes=max(peaks, default=None),
    )
