"""Splits read in chunks from Parquet, never whole: training data larger than memory.

A rank (one Ray Train worker) reads its own chunks of a split (ranks get equal shares, to
within a chunk), so workers share the data without copies. Chunks follow the file's row groups; within a rank, rows are
shuffled in a buffer of a few chunks each epoch. Every rank yields the same number of
batches, as DDP's collective calls need, so a few rows at the end are left out of an
epoch when the split does not divide evenly (a different few each epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset

from loopline.ml.dataset import LABEL, DatasetSchema

CHUNK_ROWS = 4096
SHUFFLE_CHUNKS = 4  # rows shuffle within this many chunks at once


def split_path(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.parquet"


def in_memory_bytes(folder: Path, split: str, schema: DatasetSchema) -> int:
    """What reading the split whole would take as float32 features plus labels."""
    rows = pq.ParquetFile(split_path(folder, split)).metadata.num_rows
    return rows * (len(schema.features) * 4 + 8)


def chunk_sizes(path: Path, chunk_rows: int = CHUNK_ROWS) -> list[int]:
    """The rows of each chunk ``chunks`` yields, from the file's metadata alone."""
    return [size for _, _, size in _layout(pq.ParquetFile(path).metadata, chunk_rows)]


def owners(sizes: list[int], world: int) -> list[int]:
    """Which rank reads each chunk: the rank with the fewest rows so far, so ranks differ
    by one chunk at most, whatever the row groups' sizes."""
    rows, owner = [0] * world, []
    for size in sizes:
        rank = rows.index(min(rows))
        owner.append(rank)
        rows[rank] += size
    return owner


def chunks(
    folder: Path,
    split: str,
    schema: DatasetSchema,
    *,
    rank: int = 0,
    world: int = 1,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This rank's chunks of a split: (features float32, labels int64).

    Whole row groups are read, one at a time (pyarrow's batch iterator holds on to
    memory it decoded; a row group read and dropped does not), then cut into chunks.
    """
    parquet = pq.ParquetFile(split_path(folder, split))
    layout = _layout(parquet.metadata, chunk_rows)
    owner = owners([size for _, _, size in layout], world)
    columns = [*schema.features, LABEL]
    current, table = None, None
    for (group, start, size), who in zip(layout, owner, strict=True):
        if who != rank:
            continue
        if group != current:
            current, table = (
                group,
                parquet.read_row_group(group, columns=columns, use_threads=False),
            )
        part = table.slice(start, size)
        x = np.column_stack(
            [part.column(i).to_numpy(zero_copy_only=False) for i in range(len(schema.features))]
        ).astype(np.float32)
        y = part.column(len(schema.features)).to_numpy(zero_copy_only=False).astype(np.int64)
        yield x, y


def _layout(meta, chunk_rows: int) -> list[tuple[int, int, int]]:
    """(row group, first row in it, rows) of every chunk, in file order."""
    found = []
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        found += [
            (group, start, min(chunk_rows, rows - start)) for start in range(0, rows, chunk_rows)
        ]
    return found


class TrainStream(IterableDataset):
    """Shuffled batches of this rank's share of the train split, the same count per rank."""

    def __init__(
        self,
        folder: Path,
        schema: DatasetSchema,
        batch_size: int,
        *,
        rank: int,
        world: int,
        seed: int,
    ):
        self.folder, self.schema, self.batch_size = Path(folder), schema, batch_size
        self.rank, self.world, self.seed, self.epoch = rank, world, seed, 0
        sizes = chunk_sizes(split_path(folder, "train"))
        per_rank = [sum(sizes[r::world]) for r in range(world)]
        if world == 1:
            self.batches = math.ceil(per_rank[0] / batch_size)
        else:  # equal steps on every rank
            self.batches = min(per_rank) // batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        made = 0
        pending_x: list[np.ndarray] = []
        pending_y: list[np.ndarray] = []
        leftover = (np.empty((0, len(self.schema.features)), np.float32), np.empty(0, np.int64))
        source = chunks(self.folder, "train", self.schema, rank=self.rank, world=self.world)
        exhausted = False
        while made < self.batches:
            while not exhausted and len(pending_x) < SHUFFLE_CHUNKS:
                try:
                    x, y = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending_x.append(x)
                pending_y.append(y)
            if not pending_x and len(leftover[1]) == 0:
                break
            x = np.concatenate([leftover[0], *pending_x])
            y = np.concatenate([leftover[1], *pending_y])
            pending_x, pending_y = [], []
            order = rng.permutation(len(y))
            x, y = x[order], y[order]
            full = len(y) // self.batch_size * self.batch_size
            if exhausted:
                full = len(y)  # the last rows: a final, smaller batch on one rank
            for start in range(0, full, self.batch_size):
                if made == self.batches:
                    break
                end = start + self.batch_size
                yield torch.from_numpy(x[start:end]), torch.from_numpy(y[start:end])
                made += 1
            leftover = (x[full:], y[full:])


def sample_rows(folder: Path, split: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` random rows of a split (every column) as a DataFrame, read a row group at a
    time: the same rows whatever the memory budget, for a given seed."""
    parquet = pq.ParquetFile(split_path(folder, split))
    total = parquet.metadata.num_rows
    wanted = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    parts, start = [], 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        mine = wanted[(wanted >= start) & (wanted < start + rows)] - start
        if len(mine):
            parts.append(parquet.read_row_group(group, use_threads=False).take(mine).to_pandas())
        start += rows
    if not parts:
        return parquet.schema_arrow.empty_table().to_pandas()
    return pd.concat(parts, ignore_index=True)
