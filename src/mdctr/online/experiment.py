"""Adaptive experiments whose binary objective (a conversion) arrives with a delay.

A simulator of arms with true conversion probabilities and a delay distribution, and three
allocation policies run on it, all seeds at once:

- ``split``: the fixed equal split of a classic A/B test;
- ``thompson``: Thompson sampling that counts every not-yet-converted user as a failure;
- ``delay_corrected``: the adaptive allocation of Wang et al. (JD, "Adaptive experimentation with
  delayed binary feedback"): estimate each arm's eventual conversion rate and the delay
  distribution jointly by EM over the censored log, then allocate by Thompson sampling on a Beta
  posterior whose trials are the *effective* ones, ``sum_i F(elapsed_i)`` (a user exposed an
  hour ago carries little evidence yet).

Time runs in steps; users exposed at step ``s`` whose conversion delay is ``D`` are seen as
converted from step ``s + ceil(D)`` on. Stopping: at every ``check_every`` steps, an arm whose
posterior probability of being best reaches ``threshold`` is chosen (``split`` and
``delay_corrected`` judge with the delay-corrected posterior, ``thompson`` with its own); after a
decision all traffic goes to the chosen arm until the horizon, so a wrong decision keeps costing.
Regret is the expected conversions lost against always showing the best arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mdctr.online.config import DelayConfig, ExperimentConfig, Policy

SEED_CHUNK = 32


def sample_delays(delay: DelayConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` conversion delays in steps."""
    if delay.kind == "exponential":
        return rng.exponential(delay.mean, n)
    if delay.kind == "lognormal":
        mu = math.log(delay.mean) - delay.sigma**2 / 2  # type: ignore[arg-type]
        return rng.lognormal(mu, delay.sigma, n)
    return delay.scale * rng.pareto(delay.shape, n)  # type: ignore[operator]


def delay_cdf(delay: DelayConfig, t: np.ndarray) -> np.ndarray:
    """P(D <= t), the true delay distribution."""
    t = np.asarray(t, dtype=np.float64)
    if delay.kind == "exponential":
        return 1 - np.exp(-t / delay.mean)
    if delay.kind == "lognormal":
        mu = math.log(delay.mean) - delay.sigma**2 / 2  # type: ignore[arg-type]
        z = (np.log(np.maximum(t, 1e-300)) - mu) / (delay.sigma * math.sqrt(2))
        return np.where(t > 0, 0.5 * (1 + np.vectorize(math.erf)(z)), 0.0)
    return 1 - (1 + t / delay.scale) ** -delay.shape  # type: ignore[operator]


@dataclass
class Log:
    """What an experiment has seen by step ``t``, for S seeds and K arms.

    ``exposed[s, k, c]`` users of cohort ``c`` (exposed at step c), ``converted[s, k, c]`` of them
    seen converting so far, ``delays[s, j]`` conversions seen after ``j`` steps (j >= 1).
    """

    exposed: np.ndarray
    converted: np.ndarray
    delays: np.ndarray
    t: int = 0

    @classmethod
    def empty(cls, seeds: int, arms: int, steps: int) -> Log:
        return cls(
            np.zeros((seeds, arms, steps)), np.zeros((seeds, arms, steps)), np.zeros((seeds, steps + 1))
        )

    @property
    def elapsed(self) -> np.ndarray:
        """Steps since each cohort's exposure, (t,)."""
        return self.t - np.arange(self.t, dtype=np.float64)


def naive_posterior(log: Log) -> tuple[np.ndarray, np.ndarray]:
    """(successes, trials) per seed and arm counting every unconverted user as a failure."""
    return log.converted.sum(-1), log.exposed.sum(-1)


def estimate(log: Log, model: str = "exponential", iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """EM over the censored log: eventual conversion rates ``theta (S, K)`` and the delay
    distribution's CDF at each cohort's elapsed time ``F (S, t)``.

    An unconverted user of a cohort exposed ``e`` steps ago converts later with probability
    ``theta S(e) / (1 - theta + theta S(e))`` (E step); the M step re-estimates ``theta`` and the
    delay distribution from the seen delays and the expected hidden converters, right-censored at
    ``e``: the exponential's discrete form (a geometric number of steps, ``S(e) = rho ** e``) in
    closed form, or for ``nonparametric`` the discrete hazards (a weighted Kaplan-Meier estimate,
    every conversion assumed to surface within the ``t`` steps seen), started from the
    exponential's solution.
    """
    t = log.t
    n, c = log.exposed[:, :, :t], log.converted[:, :, :t]
    e = log.elapsed
    total_n = np.maximum(n.sum(-1), 1.0)
    seen = c.sum(-1)
    theta = np.clip(seen / total_n, 1e-6, 1 - 1e-6)
    hist = log.delays[:, 1 : t + 1]
    seen_waits = (hist * np.arange(t)).sum(-1)
    survival = np.exp(-e / max(t / 2, 1.0))[None, :].repeat(len(n), 0)
    steps = ["exponential"] * iterations + (
        ["nonparametric"] * iterations if model == "nonparametric" else []
    )
    for m_step in steps:
        later = theta[:, :, None] * survival[:, None, :]
        hidden = (n - c) * later / (1 - theta[:, :, None] + later)
        theta = np.clip((seen + hidden.sum(-1)) / total_n, 1e-6, 1 - 1e-6)
        if m_step == "exponential":
            waits = seen_waits + (hidden.sum(1) * e).sum(-1)
            keep = waits / np.maximum(waits + seen.sum(-1), 1e-12)
            survival = keep[:, None] ** e[None, :]
        else:
            censored = hidden.sum(1)[:, ::-1]
            at_risk = np.cumsum(hist[:, ::-1], -1)[:, ::-1] + np.cumsum(censored[:, ::-1], -1)[:, ::-1]
            hazard = np.divide(hist, at_risk, out=np.zeros_like(hist), where=at_risk > 0)
            hazard[:, -1] = 1.0
            survival = np.cumprod(1 - hazard, -1)[:, (e - 1).astype(int)]
    return theta, 1 - survival


def corrected_posterior(
    log: Log, model: str = "exponential", iterations: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """(successes, effective trials) per seed and arm: trials ``sum_c n_c F(e_c)``."""
    _, cdf = estimate(log, model, iterations)
    trials = (log.exposed[:, :, : log.t] * cdf[:, None, :]).sum(-1)
    seen = log.converted.sum(-1)
    return seen, np.maximum(trials, seen)


def best_probability(
    successes: np.ndarray, trials: np.ndarray, rng: np.random.Generator, draws: int
) -> np.ndarray:
    """P(arm is best) per seed and arm under Beta(1 + successes, 1 + trials - successes)."""
    a = 1 + successes[:, None, :]
    b = 1 + np.maximum(trials - successes, 0)[:, None, :]
    shape = (successes.shape[0], draws, successes.shape[1])
    sample = rng.beta(np.broadcast_to(a, shape), np.broadcast_to(b, shape))
    best = sample.argmax(-1)
    return np.stack([(best == k).mean(-1) for k in range(successes.shape[1])], -1)


@dataclass(frozen=True)
class Outcome:
    """One policy over S seeds: chosen arm, decision step, cumulative regret curve (S, steps)
    and what was seen by the last step."""

    policy: Policy
    decision: np.ndarray
    stopped_at: np.ndarray
    regret: np.ndarray
    best: int
    log: Log

    @property
    def correct(self) -> np.ndarray:
        return self.decision == self.best


def _posterior(policy: Policy, log: Log, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    if policy == "thompson":
        return naive_posterior(log)
    return corrected_posterior(log, cfg.delay_model, cfg.em_iterations)


def _observe(log: Log, arrivals: np.ndarray, t: int) -> None:
    """Advance ``log`` to step ``t``: the conversions that surface at ``t`` become visible."""
    log.t = t
    if t:
        cohorts = np.arange(t)
        fresh = arrivals[:, :, cohorts, t - cohorts]
        log.converted[:, :, :t] += fresh
        log.delays[:, t - cohorts] += fresh.sum(1)


def _run_chunk(cfg: ExperimentConfig, policy: Policy, seeds: np.ndarray) -> Outcome:
    arms = np.asarray(cfg.arms)
    s, k, steps = len(seeds), len(arms), cfg.steps
    rng = np.random.default_rng([cfg.seed, int(seeds[0]), len(seeds)])
    policy_rng = np.random.default_rng([cfg.seed, int(seeds[0]), len(seeds), 1])
    log = Log.empty(s, k, steps)
    arrivals = np.zeros((s, k, steps, steps + 1))
    decision = np.full(s, -1)
    stopped_at = np.full(s, steps)
    regret = np.zeros((s, steps))
    gap = arms.max() - arms
    for t in range(steps):
        _observe(log, arrivals, t)
        probs = np.full((s, k), 1.0 / k)
        checking = cfg.stopping == "posterior" and t >= cfg.min_steps and t % cfg.check_every == 0
        if t and (policy != "split" or checking):
            successes, trials = _posterior(policy, log, cfg)
            best_p = best_probability(successes, trials, policy_rng, cfg.draws)
            if policy != "split":
                probs = best_p
            if checking:
                stop = (decision < 0) & (best_p.max(-1) >= cfg.threshold)
                decision[stop], stopped_at[stop] = best_p[stop].argmax(-1), t
        decided = decision >= 0
        probs[decided] = 0.0
        probs[decided, decision[decided]] = 1.0
        counts = rng.multinomial(cfg.users_per_step, probs)
        log.exposed[:, :, t] = counts
        regret[:, t] = counts @ gap
        converts = rng.binomial(counts, arms)
        lag = np.ceil(sample_delays(cfg.delay, rng, int(converts.sum()))).astype(np.int64)
        seed_idx, arm_idx = np.nonzero(converts)
        reps = converts[seed_idx, arm_idx]
        keep = lag <= steps - t
        np.add.at(
            arrivals,
            (np.repeat(seed_idx, reps)[keep], np.repeat(arm_idx, reps)[keep], t, np.maximum(lag[keep], 1)),
            1.0,
        )
    undecided = decision < 0
    _observe(log, arrivals, steps)
    if undecided.any():
        successes, trials = _posterior(policy if policy == "thompson" else "delay_corrected", log, cfg)
        decision[undecided] = ((1 + successes) / (2 + trials)).argmax(-1)[undecided]
    return Outcome(policy, decision, stopped_at, np.cumsum(regret, -1), int(arms.argmax()), log)


def run(cfg: ExperimentConfig, policy: Policy) -> Outcome:
    """Simulate ``policy`` on ``cfg.seeds`` seeds (in chunks, all seeds of a chunk at once)."""
    parts = [
        _run_chunk(cfg, policy, np.arange(start, min(start + SEED_CHUNK, cfg.seeds)))
        for start in range(0, cfg.seeds, SEED_CHUNK)
    ]
    return Outcome(
        policy,
        np.concatenate([p.decision for p in parts]),
        np.concatenate([p.stopped_at for p in parts]),
        np.concatenate([p.regret for p in parts]),
        parts[0].best,
        Log(
            *(np.concatenate([getattr(p.log, f) for p in parts]) for f in ("exposed", "converted", "delays")),
            parts[0].log.t,
        ),
    )


def interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % confidence interval."""
    values = np.asarray(values, dtype=np.float64)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(half)


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion."""
    z = 1.96
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def summary(outcome: Outcome) -> dict:
    """Error rate (Wilson CI), regret and decision step (mean, 95 % CI half-width)."""
    n = len(outcome.decision)
    errors = int((~outcome.correct).sum())
    regret, regret_ci = interval(outcome.regret[:, -1])
    step, step_ci = interval(outcome.stopped_at)
    return {
        "policy": outcome.policy,
        "seeds": n,
        "error_rate": errors / n,
        "error_ci": list(wilson(errors, n)),
        "regret": regret,
        "regret_ci": regret_ci,
        "decision_step": step,
        "decision_step_ci": step_ci,
        "decided_early": float((outcome.stopped_at < outcome.regret.shape[1]).mean()),
    }


def compare(cfg: ExperimentConfig) -> dict:
    """Every policy of ``cfg`` on the same seeds: summaries and mean regret over time."""
    outcomes = [run(cfg, policy) for policy in cfg.policies]
    return {
        "config": cfg.model_dump(mode="json"),
        "best_arm": outcomes[0].best,
        "policies": [summary(o) for o in outcomes],
        "regret_curve": {o.policy: o.regret.mean(0).round(4).tolist() for o in outcomes},
    }


def plot_regret(result: dict, path: str) -> None:
    """Mean cumulative regret over time, one line per policy."""
    from mdctr.report import _pyplot, _save

    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for policy, curve in result["regret_curve"].items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=policy)
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative regret (conversions lost)")
    ax.set_title(f"{result['config']['name']}: {result['config']['seeds']} seeds")
    ax.legend()
    _save(fig, path)
