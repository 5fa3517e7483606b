"""One dataset format for demonstrations and offline RL: a file pair.

``save(dataset, "data/cartpole_expert")`` writes

    data/cartpole_expert.npz    the arrays (np.savez), flat over N transitions in episode order
    data/cartpole_expert.json   the metadata (env, policy, returns, the command that made it, ...)

Arrays (row ``i`` is one transition ``obs -> action -> reward, next_obs``):

    obs         [N, *obs_shape]     float32
    action      [N, *action_shape]  int32 (discrete) or float32 (continuous)
    reward      [N] or [N, k]       float32 (k objectives)
    next_obs    [N, *obs_shape]     float32, the observation after ``obs`` *before*
                                    any auto-reset, so bootstrapping on truncation works
    terminated  [N]                 bool, the episode ended in a terminal state
    truncated   [N]                 bool, the episode was cut (time limit): bootstrap from next_obs
    episode_id  [N]                 int32, 0, 0, ..., 1, 1, ...: consecutive from 0

``load`` checks all of it (see ``validate``) and raises ``DatasetError`` naming
the field and, where it applies, the row.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any, Sequence

import numpy as np

import rljax
from envs.core import is_discrete, observation_shape

FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode_id")

# Observations in one episode must chain: next_obs[i] == obs[i + 1]. The env
# computes both from the same state, but XLA may fuse the two computations
# differently, so they can differ in the last bit.
_CHAIN_RTOL, _CHAIN_ATOL = 1e-5, 1e-6


class DatasetError(ValueError):
    """A dataset file or array does not follow the format (the message names the field and row)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Transitions in episode order, numpy arrays flat over ``N`` rows (see the module docstring)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode_id: np.ndarray
    metadata: dict[str, Any]

    @property
    def num_transitions(self) -> int:
        return int(self.obs.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_id[-1]) + 1 if self.num_transitions else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        """``[num_episodes]`` rows per episode."""
        return np.bincount(self.episode_id, minlength=self.num_episodes)

    @property
    def episode_returns(self) -> np.ndarray:
        """``[num_episodes]`` or ``[num_episodes, k]`` undiscounted return of each episode."""
        returns = np.zeros((self.num_episodes,) + self.reward.shape[1:], self.reward.dtype)
        np.add.at(returns, self.episode_id, self.reward)
        return returns

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FIELDS}


# ---------------------------------------------------------------- building


def _with_summary(arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Dataset:
    """A Dataset whose metadata also records counts, returns, time and version."""
    dataset = Dataset(**arrays, metadata={})
    summary = {
        "num_transitions": dataset.num_transitions,
        "num_episodes": dataset.num_episodes,
        "episode_returns": dataset.episode_returns.tolist(),
        "mean_return": dataset.episode_returns.mean(axis=0, dtype=np.float64).tolist(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rljax_version": rljax.__version__,
    }
    return dataclasses.replace(dataset, metadata={**metadata, **summary})


def from_trajectory(traj, metadata: dict[str, Any], *, drop_partial: bool = True) -> Dataset:
    """Flatten a time-major ``Trajectory`` ``[T, num_envs, ...]`` into episode order.

    Each env column is split at its done steps (terminated or truncated) and its
    episodes are numbered after the previous column's. The column's unfinished
    tail is dropped with ``drop_partial=True`` (the default: every stored episode
    is complete, so returns are true episode returns). With ``drop_partial=False``
    it is kept and its last row marked ``truncated``: data collection cut it,
    like a time limit, and ``next_obs`` is still the true next observation, so
    bootstrapping stays correct, but its return is that of a partial episode.
    ``metadata`` is completed with counts, episode and mean returns, creation time and version.
    """
    obs, next_obs = np.asarray(traj.obs, np.float32), np.asarray(traj.next_obs, np.float32)
    action = np.asarray(traj.action)
    action = action.astype(np.float32 if np.issubdtype(action.dtype, np.floating) else np.int32)
    reward = np.asarray(traj.reward, np.float32)
    terminated, truncated = np.asarray(traj.terminated, bool), np.asarray(traj.truncated, bool)
    num_steps, num_envs = terminated.shape

    columns, first_id = [], 0
    for e in range(num_envs):
        done = terminated[:, e] | truncated[:, e]
        ends = np.flatnonzero(done)
        length = (ends[-1] + 1 if len(ends) else 0) if drop_partial else num_steps
        if length == 0:
            continue
        column_truncated = truncated[:length, e].copy()
        column_truncated[-1] |= not done[length - 1]  # a kept partial tail ends cut
        # Episode number of each row: episodes before it, i.e. done flags strictly above.
        ids = first_id + np.concatenate([[0], np.cumsum(done[: length - 1])])
        columns.append({
            "obs": obs[:length, e], "action": action[:length, e], "reward": reward[:length, e],
            "next_obs": next_obs[:length, e], "terminated": terminated[:length, e],
            "truncated": column_truncated, "episode_id": ids.astype(np.int32),
        })
        first_id = int(ids[-1]) + 1
    if not columns:
        raise DatasetError(
            f"no complete episode in the trajectory ({num_steps} steps x {num_envs} envs): "
            "collect more steps per env, or pass drop_partial=False to keep unfinished episodes"
        )
    arrays = {name: np.concatenate([c[name] for c in columns]) for name in FIELDS}
    return _with_summary(arrays, metadata)


def concatenate(datasets: Sequence[Dataset], metadata: dict[str, Any]) -> Dataset:
    """One dataset with the episodes of ``datasets`` in order, episode ids renumbered."""
    if not datasets:
        raise DatasetError("concatenate: expected at least one dataset, got none")
    first = datasets[0]
    for index, other in enumerate(datasets[1:], start=1):
        for name in ("obs", "action", "reward"):
            a, b = getattr(first, name), getattr(other, name)
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                raise DatasetError(
                    f"concatenate: field {name!r} of dataset {index} has rows of shape {b.shape[1:]} "
                    f"and dtype {b.dtype}, dataset 0 has {a.shape[1:]} and {a.dtype}"
                )
    offsets = np.cumsum([0] + [d.num_episodes for d in datasets[:-1]])
    arrays = {name: np.concatenate([getattr(d, name) for d in datasets]) for name in FIELDS}
    arrays["episode_id"] = np.concatenate([d.episode_id + o for d, o in zip(datasets, offsets)]).astype(np.int32)
    return _with_summary(arrays, metadata)


def select_episodes(dataset: Dataset, episodes, metadata: dict[str, Any] | None = None) -> Dataset:
    """The rows of the listed ``episodes`` (ids, in the order given), renumbered 0, 1, ...

    ``metadata`` (default: the source's, less its counts and returns) is
    completed with the new counts and returns, and ``source_episodes`` records the ids taken.
    """
    episodes = [int(e) for e in episodes]
    bad = [e for e in episodes if not 0 <= e < dataset.num_episodes]
    if not episodes or bad:
        raise DatasetError(
            f"select_episodes: expected episode ids in [0, {dataset.num_episodes}), got {bad or 'none'}"
        )
    rows = [np.flatnonzero(dataset.episode_id == e) for e in episodes]
    arrays = {name: np.concatenate([getattr(dataset, name)[r] for r in rows]) for name in FIELDS}
    arrays["episode_id"] = np.concatenate([np.full(len(r), i, np.int32) for i, r in enumerate(rows)])
    summary = ("num_transitions", "num_episodes", "episode_returns", "mean_return", "created")
    base = {k: v for k, v in dataset.metadata.items() if k not in summary} if metadata is None else metadata
    return _with_summary(arrays, {**base, "source_episodes": episodes})


def check_matches_env(dataset: Any, env, env_params, name: str = "dataset") -> None:
    """Raise ``DatasetError`` unless ``dataset``'s observations and actions fit ``env``.

    ``dataset``: a ``Dataset`` or anything with ``obs`` and ``action`` arrays
    (numpy or jax). Checks the observation shape, discrete vs continuous actions,
    the action shape, and that actions lie in the action space; ``name`` (a file
    path, say) starts the message.
    """
    obs, action = np.asarray(dataset.obs), np.asarray(dataset.action)
    obs_shape = tuple(observation_shape(env, env_params))
    if obs.shape[1:] != obs_shape:
        raise DatasetError(f"{name}: field 'obs' has rows of shape {obs.shape[1:]}, the env expects {obs_shape}")
    space = env.action_space(env_params)
    if is_discrete(env, env_params):
        if action.dtype.kind not in "iu" or action.ndim != 1:
            raise DatasetError(
                f"{name}: field 'action' has dtype {action.dtype} and rows of shape {action.shape[1:]}; "
                "the env has discrete actions: expected integer rows of shape ()"
            )
        outside = (action < 0) | (action >= space.n)
        expected = f"0..{space.n - 1}"
    else:
        expected_shape = tuple(space.shape)
        if action.dtype.kind != "f" or action.shape[1:] != expected_shape:
            raise DatasetError(
                f"{name}: field 'action' has dtype {action.dtype} and rows of shape {action.shape[1:]}; "
                f"the env has continuous actions: expected float rows of shape {expected_shape}"
            )
        low, high = np.broadcast_to(space.low, expected_shape), np.broadcast_to(space.high, expected_shape)
        outside = (action < low - 1e-5) | (action > high + 1e-5)
        expected = f"in [{low.tolist()}, {high.tolist()}]"
    if outside.any():
        i = _first_row(outside)
        raise DatasetError(f"{name}: field 'action' is {action[i].tolist()} at row {i}; the env's actions are {expected}")


def normalized_score(returns, random_return, expert_return):
    """``100 * (R - random) / (expert - random)``: 0 is the random policy, 100 the expert (D4RL)."""
    random_return, expert_return = np.asarray(random_return, np.float64), np.asarray(expert_return, np.float64)
    if np.any(expert_return == random_return):
        raise ValueError(
            f"normalized_score: expert_return ({expert_return}) equals random_return ({random_return}); "
            "the score is undefined"
        )
    return 100.0 * (np.asarray(returns, np.float64) - random_return) / (expert_return - random_return)


def scale_rewards_by_return_range(dataset: Dataset, target_range: float = 1000.0) -> tuple[Dataset, float]:
    """Rewards times ``target_range / (max episode return - min episode return)``: the MuJoCo reward
    normalisation of IQL, XQL, f-DVL and ODICE's D4RL loaders. Returns the new dataset (its metadata
    records ``reward_scale``) and the factor. Scalar rewards only; the returns must not all be equal."""
    if dataset.reward.ndim != 1:
        raise DatasetError(f"field 'reward' has shape {dataset.reward.shape}; the return range needs [N] rewards")
    returns = dataset.episode_returns
    spread = float(returns.max() - returns.min()) if returns.size else 0.0
    if not spread > 0:
        raise DatasetError(f"episode returns span {spread} (over {returns.size} episodes); the return range "
                           "normalisation needs episodes with different returns")
    scale = target_range / spread
    metadata = {**dataset.metadata, "reward_scale": scale}
    return dataclasses.replace(dataset, reward=(dataset.reward * scale).astype(dataset.reward.dtype),
                               metadata=metadata), scale


# ---------------------------------------------------------------- checking


def _first_row(mask: np.ndarray) -> int:
    """First row where ``mask`` (``[N, ...]``) is true anywhere."""
    return int(np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))[0])


def validate(dataset: Dataset) -> None:
    """Raise ``DatasetError`` (naming the field, row, expected and actual) unless ``dataset`` is well formed.

    Checks: numpy arrays; dtype kinds (obs/next_obs/reward floating, action
    numeric, terminated/truncated bool, episode_id integer); one row per
    transition in every field; ``next_obs`` shaped like ``obs``; finite
    observations, rewards and continuous actions; episode ids 0, 1, 2, ... in
    runs; terminated and truncated never both set and set only on an episode's
    last row, which every episode but the last in the file must have;
    ``next_obs[i] == obs[i + 1]`` inside an episode; metadata a dict whose
    ``num_transitions`` and ``num_episodes`` (if present) match the arrays.
    """
    if not isinstance(dataset.metadata, dict):
        raise DatasetError(f"metadata: expected a dict (JSON object), got {type(dataset.metadata).__name__}")
    kinds = {
        "obs": ("f", "a floating dtype (float32)"), "next_obs": ("f", "a floating dtype (float32)"),
        "reward": ("f", "a floating dtype (float32)"), "action": ("iuf", "an integer or floating dtype"),
        "terminated": ("b", "bool"), "truncated": ("b", "bool"), "episode_id": ("iu", "an integer dtype (int32)"),
    }
    for name, (kind, expected) in kinds.items():
        value = getattr(dataset, name)
        if not isinstance(value, np.ndarray):
            raise DatasetError(f"field {name!r}: expected a numpy array, got {type(value).__name__}")
        if value.dtype.kind not in kind:
            raise DatasetError(f"field {name!r}: expected {expected}, got {value.dtype}")

    obs = dataset.obs
    if obs.ndim == 0 or obs.shape[0] == 0:
        raise DatasetError(f"field 'obs': expected shape [N, *obs_shape] with N > 0 transitions, got {obs.shape}")
    n = obs.shape[0]
    for name in FIELDS[1:]:
        rows = getattr(dataset, name).shape[:1]
        if rows != (n,):
            actual = rows[0] if rows else "a scalar"
            raise DatasetError(f"field {name!r}: expected {n} rows (one per transition, as obs), got {actual}")
    for name, ndims in (("reward", (1, 2)), ("terminated", (1,)), ("truncated", (1,)), ("episode_id", (1,))):
        if getattr(dataset, name).ndim not in ndims:
            shapes = " or ".join(["[N]", "[N, k]"][: len(ndims)])
            raise DatasetError(f"field {name!r}: expected shape {shapes}, got {getattr(dataset, name).shape}")
    if dataset.next_obs.shape != obs.shape:
        raise DatasetError(f"field 'next_obs': expected shape {obs.shape} (as obs), got {dataset.next_obs.shape}")
    for name in ("obs", "next_obs", "reward", "action"):
        value = getattr(dataset, name)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise DatasetError(f"field {name!r}: NaN or inf at row {_first_row(~np.isfinite(value))}")

    ids, terminated, truncated = dataset.episode_id, dataset.terminated, dataset.truncated
    if ids[0] != 0:
        raise DatasetError(f"field 'episode_id': expected the first episode id to be 0, got {ids[0]} at row 0")
    steps = np.diff(ids)
    bad = np.flatnonzero((steps != 0) & (steps != 1))
    if len(bad):
        i = int(bad[0]) + 1
        raise DatasetError(
            f"field 'episode_id': row {i} has id {ids[i]} after {ids[i - 1]} at row {i - 1}; "
            "ids must stay the same within an episode and increase by exactly 1 between episodes"
        )
    both = terminated & truncated
    if both.any():
        raise DatasetError(f"fields 'terminated' and 'truncated': both true at row {_first_row(both)}")
    same_episode = steps == 0  # row i and row i + 1 belong to one episode
    done = terminated | truncated
    early = done[:-1] & same_episode
    if early.any():
        i = _first_row(early)
        name = "terminated" if terminated[i] else "truncated"
        raise DatasetError(
            f"field {name!r}: set at row {i}, but episode {ids[i]} continues at row {i + 1}; "
            "an episode ends at its done row"
        )
    unfinished = ~done[:-1] & ~same_episode
    if unfinished.any():
        i = _first_row(unfinished)
        raise DatasetError(
            f"fields 'terminated'/'truncated': row {i} is the last row of episode {ids[i]} but neither is set; "
            "only the last episode in the file may be unfinished"
        )
    chained = np.isclose(dataset.next_obs[:-1], obs[1:], _CHAIN_RTOL, _CHAIN_ATOL).reshape(n - 1, -1).all(axis=1)
    mismatch = same_episode & ~chained
    if mismatch.any():
        i = _first_row(mismatch)
        gap = np.abs(dataset.next_obs[i] - obs[i + 1]).max()
        raise DatasetError(
            f"field 'next_obs': row {i} differs from obs at row {i + 1} in the same episode "
            f"(episode {ids[i]}, largest difference {gap:.3g})"
        )

    for key, actual in (("num_transitions", n), ("num_episodes", int(ids[-1]) + 1)):
        if key in dataset.metadata and dataset.metadata[key] != actual:
            raise DatasetError(f"metadata {key!r}: says {dataset.metadata[key]!r}, the arrays hold {actual}")


# ---------------------------------------------------------------- files


def paths(path: str) -> tuple[str, str]:
    """``(path.npz, path.json)``, with a trailing ``.npz`` or ``.json`` of ``path`` stripped."""
    base, ext = os.path.splitext(path)
    if ext in (".npz", ".json"):
        path = base
    return path + ".npz", path + ".json"


def check_can_write(path: str, overwrite: bool = False) -> tuple[str, str]:
    """The file pair for ``path``; ``FileExistsError`` if either exists and ``overwrite`` is false."""
    pair = paths(path)
    for existing in pair:
        if os.path.exists(existing) and not overwrite:
            raise FileExistsError(
                f"{existing} already exists; pass overwrite=True (--overwrite on the command line) to replace it"
            )
    return pair


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.ndarray, np.generic)):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def save(dataset: Dataset, path: str, *, overwrite: bool = False) -> tuple[str, str]:
    """Validate ``dataset`` and write ``path.npz`` and ``path.json``; returns the two paths."""
    validate(dataset)
    npz_path, json_path = check_can_write(path, overwrite)
    try:  # before writing anything, so a bad metadata value leaves no half pair
        text = json.dumps(dataset.metadata, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"metadata: not JSON serialisable ({e})") from e
    os.makedirs(os.path.dirname(npz_path) or ".", exist_ok=True)
    np.savez(npz_path, **dataset.arrays())
    with open(json_path, "w") as f:
        f.write(text + "\n")
    return npz_path, json_path


def load(path: str) -> Dataset:
    """Read ``path.npz`` and ``path.json`` and ``validate`` them."""
    npz_path, json_path = paths(path)
    for p in (npz_path, json_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p}: no such file (a dataset is the pair {npz_path} + {json_path})")
    with np.load(npz_path, allow_pickle=False) as npz:
        names = set(npz.files)
        for name in FIELDS:
            if name not in names:
                raise DatasetError(f"{npz_path}: missing field {name!r}; expected fields: {', '.join(FIELDS)}")
        unknown = sorted(names - set(FIELDS))
        if unknown:
            raise DatasetError(f"{npz_path}: unknown field(s) {unknown}; expected fields: {', '.join(FIELDS)}")
        arrays = {}
        for name in FIELDS:
            try:
                arrays[name] = npz[name]
            except ValueError as e:  # an object array: reading it would need pickle
                raise DatasetError(f"{npz_path}: field {name!r}: {e}") from e
    try:
        with open(json_path) as f:
            metadata = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_path}: metadata is not valid JSON ({e})") from e
    dataset = Dataset(**arrays, metadata=metadata)
    try:
        validate(dataset)
    except DatasetError as e:
        raise DatasetError(f"{npz_path}: {e}") from e
    return dataset
