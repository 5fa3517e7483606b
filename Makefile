# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
export XLA_PYTHON_CLIENT_PREALLOCATE := false

.PHONY: setup demo test test-integration test-slow bench bench-cpu-compile bench-dpo bench-reward bench-rejax bench-brax clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $(STAMP)

# A short PPO run on CPU: progress bar, metrics.jsonl, curve.png, checkpoints.
demo: $(STAMP)
	$(BIN)/python -m experiments ppo --env gymnax/CartPole-v1 --seeds 8 --total-steps 500000 --out runs/demo --overwrite

# The test processes (both xdist workers, notebook kernels, CLI subprocesses) share one persistent XLA
# compilation cache, so a program compiled in one is loaded, not recompiled, in the others; every program
# is cached, not only those that took over a second to compile (jax's default), which saves 3-13%.
# The default tier compiles at XLA's backend optimisation level 1: most of its time is XLA compiling
# (LLVM), and level 1 cut a fresh-clone run from 33.5 to 26.6 minutes (README, Tests). The slow tier keeps
# the default level, at which the paper figures were recorded.
TEST_ENV := JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
FAST_COMPILE := XLA_FLAGS="$(XLA_FLAGS) --xla_backend_optimization_level=1"

# Default tier: everything but `integration`, `slow` and `gpu` tests (see README, Tests, for its time).
test: $(STAMP)
	$(TEST_ENV) $(FAST_COMPILE) $(BIN)/python -m pytest -n 2 --dist loadfile -q

# Whole programs: every experiment's --quick run (but those on brax: slow), the notebooks, the 8-device
# sharding check, the benchmarks' smoke runs. CI runs it after `test`.
test-integration: $(STAMP)
	$(TEST_ENV) $(FAST_COMPILE) $(BIN)/python -m pytest -m integration -n 2 --dist loadfile -q

# Paper-figure reproductions (minutes each on CPU).
test-slow: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python -m experiments.benchmarks.throughput --out runs/bench/throughput.json

# Compile and run time of training programs at XLA's default CPU level and at level 1, in one process.
bench-cpu-compile: $(STAMP)
	$(BIN)/python -m experiments.benchmarks.cpu_compile --out runs/bench/cpu_compile.json

# DPO and reward-model training throughput against TRL's DPOTrainer and RewardTrainer on the same shapes,
# in one process each.
bench-dpo bench-reward: bench-%: $(STAMP)
	$(BIN)/python -m experiments.benchmarks.dpo_throughput --objective $* --out runs/bench/$*_throughput.json

# PPO and SAC training throughput beside Rejax's on the same settings, in one process.
bench-rejax: $(STAMP)
	$(BIN)/python -m experiments.benchmarks.vs_rejax --out runs/bench/vs_rejax.json

# PPO and SAC training throughput beside brax's own trainers on the same brax envs and settings, in one process.
bench-brax: $(STAMP)
	$(BIN)/python -m experiments.benchmarks.vs_brax --out runs/bench/vs_brax.json

clean:
	rm -rf $(VENV) runs .jax_cache
