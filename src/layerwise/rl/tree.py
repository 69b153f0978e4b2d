"""Rollout forests: every prompt's denoising trajectories as a tree with shared prefixes.

One prompt starts `roots` trajectories from its initial noise (one noise tensor shared by them, as
the reference's `init_same_noise`). At every step each live node is evaluated **once** by the
model; at a split step it gets `branch` children, elsewhere one. So

- flat GRPO (DanceGRPO) is the forest of G roots and branch 1: G independent chains, G·S calls;
- BranchGRPO is one root split `branch`-ways at the split points: prefixes before a split are
  computed once for all leaves below it.

The forest stores every node (state, parent, depth, the log-probability of the edge into it) in
flat tensors in creation order, so a parent always precedes its children; rewards are fused up the
tree, advantages normalised per depth, and every stochastic edge becomes a training transition.

Random numbers come from one generator per prompt, drawn in frontier order, so a prompt's rollout
does not depend on which other prompts share its batch or process.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .policy import Velocity, forward_chunks
from .sampler import Sampler


@dataclass
class Forest:
    x: torch.Tensor            # (N, *shape) node states; roots are the initial noise
    x0: torch.Tensor           # (N, *shape) the x₀ prediction made where the node was created (roots: noise)
    parent: torch.Tensor       # (N,) long, -1 for roots
    depth: torch.Tensor        # (N,) long: steps from the root (the edge into a node of depth d is step d−1)
    prompt: torch.Tensor       # (N,) long: which prompt's tree
    root: torch.Tensor         # (N,) long: index of the node's root
    logp: torch.Tensor         # (N,) log-probability of the edge into the node (0 for roots and ODE edges)
    logp_scale: torch.Tensor   # (N,) factor on the step's std in that log-probability
    sde: torch.Tensor          # (N,) bool: the edge into the node was stochastic (trainable)
    cond: torch.Tensor         # (P, ...) the condition of each prompt
    steps: int
    forward_calls: int = 0
    calls_per_step: list = field(default_factory=list)

    @property
    def leaves(self) -> torch.Tensor:
        return torch.nonzero(self.depth == self.steps).flatten()

    @property
    def num_prompts(self) -> int:
        return int(self.cond.shape[0])

    def edges(self) -> torch.Tensor:
        """Indices of the nodes that have an edge into them (every non-root), in creation order."""
        return torch.nonzero(self.parent >= 0).flatten()

    def leaves_below(self) -> torch.Tensor:
        """(N,) number of leaf descendants of every node."""
        count = (self.depth == self.steps).to(torch.float64)
        for d in range(self.steps, 0, -1):
            idx = torch.nonzero(self.depth == d).flatten()
            count.index_add_(0, self.parent[idx], count[idx])
        return count


def nodes_per_step(steps: int, split_points, branch: int, roots: int = 1) -> list[int]:
    """Closed form of the forward calls of one tree at every step: roots·branch^(splits before j)."""
    points = set(split_points)
    out, live = [], roots
    for j in range(steps):
        out.append(live)
        if j in points:
            live *= branch
    return out


def tree_counts(steps: int, split_points, branch: int, roots: int = 1) -> dict:
    """Forward calls, leaves and edges of one prompt's tree, in closed form."""
    per = nodes_per_step(steps, split_points, branch, roots)
    points = set(split_points)
    edges = sum(n * (branch if j in points else 1) for j, n in enumerate(per))
    leaves = roots * branch ** len(points)
    return {"forward_calls": sum(per), "leaves": leaves, "edges": edges}


def rollout(fn: Velocity, cond: torch.Tensor, sampler: Sampler, sample_shape, generators: list[torch.Generator],
            *, roots: int = 1, split_points=(), branch: int = 2, split_noise_scale: float = 1.0,
            consistent_split_logprob: bool = False, ode_steps=(), same_noise: bool = True,
            batch: int = 4096, on_step=None) -> Forest:
    """Grow every prompt's tree (no gradients). `ode_steps`: steps taken deterministically (logp 0)."""
    P = cond.shape[0]
    if len(generators) != P:
        raise ValueError(f"{P} prompts need {P} generators (got {len(generators)})")
    shape = tuple(sample_shape)
    points, ode = set(split_points), set(ode_steps)
    xs, x0s, parents, depths, prompts, roots_of, logps, scales, sdes = [], [], [], [], [], [], [], [], []
    noise = []
    for p in range(P):
        if same_noise:
            noise.append(torch.randn(shape, generator=generators[p]).expand(roots, *shape))
        else:
            noise.append(torch.randn((roots, *shape), generator=generators[p]))
    x = torch.cat(noise).contiguous()
    frontier_prompt = torch.arange(P).repeat_interleave(roots)
    n = x.shape[0]
    frontier = torch.arange(n)
    xs.append(x), x0s.append(x), parents.append(torch.full((n,), -1)), depths.append(torch.zeros(n, dtype=torch.long))
    prompts.append(frontier_prompt), roots_of.append(frontier.clone()), logps.append(torch.zeros(n))
    scales.append(torch.ones(n)), sdes.append(torch.zeros(n, dtype=torch.bool))
    total, calls = n, []
    for j in range(sampler.steps):
        m = x.shape[0]
        jj = torch.full((m,), j, dtype=torch.long)
        with torch.no_grad():
            v = forward_chunks(fn, x, sampler.sigma[jj], cond[frontier_prompt], batch)
        calls.append(m)
        split = j in points and branch > 1
        k = branch if split else 1
        sde = split or j not in ode
        mean = sampler.mean(x, v, jj, sde=sde)
        x0 = sampler.x0(x, v, jj)
        child_prompt = frontier_prompt.repeat_interleave(k)
        kk = jj.repeat_interleave(k)
        mean = mean.repeat_interleave(k, dim=0)
        if sde:
            z = torch.cat([torch.randn((int((child_prompt == p).sum()), *shape), generator=generators[p])
                           for p in range(P)])
            scale = split_noise_scale if split else 1.0
            std = sampler.std(kk)
            child = mean + sampler._col(std * scale, mean) * z
            lscale = scale if (split and consistent_split_logprob) else 1.0
            logp = sampler.logp(child, mean, std * lscale)
        else:
            child, lscale, logp = mean, 1.0, torch.zeros(mean.shape[0])
        mc = child.shape[0]
        parents.append(frontier.repeat_interleave(k))
        xs.append(child), x0s.append(x0.repeat_interleave(k, dim=0))
        depths.append(torch.full((mc,), j + 1, dtype=torch.long)), prompts.append(child_prompt)
        roots_of.append(torch.cat(roots_of)[parents[-1]]), logps.append(logp)
        scales.append(torch.full((mc,), float(lscale))), sdes.append(torch.full((mc,), sde))
        frontier = torch.arange(total, total + mc)
        total += mc
        x, frontier_prompt = child, child_prompt
        if on_step is not None:
            on_step(j, m)
    return Forest(x=torch.cat(xs), x0=torch.cat(x0s), parent=torch.cat(parents), depth=torch.cat(depths),
                  prompt=torch.cat(prompts), root=torch.cat(roots_of), logp=torch.cat(logps),
                  logp_scale=torch.cat(scales), sde=torch.cat(sdes), cond=cond, steps=sampler.steps,
                  forward_calls=sum(calls), calls_per_step=calls)


# --- rewards up the tree and advantages ---------------------------------------------------------------

def fuse_rewards(forest: Forest, leaf_reward: torch.Tensor, mode: str = "mean", alpha: float = 1.0) -> torch.Tensor:
    """(N,) reward of every node from the rewards of the leaves (in `forest.leaves` order).

    mean: the mean over the node's leaf descendants. prob: Σ over children of softmax(α·logp_child)·r_child
    (a single child passes its reward up unchanged)."""
    if mode == "mean":
        return _means_from_sums(forest, leaf_reward)
    r = torch.zeros(forest.x.shape[0], dtype=torch.float64)
    r[forest.leaves] = leaf_reward.to(torch.float64)
    if mode == "prob":
        for d in range(forest.steps, 0, -1):
            idx = torch.nonzero(forest.depth == d).flatten()
            par = forest.parent[idx]
            w = alpha * forest.logp[idx].to(torch.float64)
            wmax = torch.full_like(r, -torch.inf).scatter_reduce(0, par, w, reduce="amax", include_self=True)
            e = torch.exp(w - wmax[par])
            den = torch.zeros_like(r).index_add_(0, par, e)
            r.index_add_(0, par, e * r[idx] / den[par])
        return r.float()
    raise ValueError(f"reward fusion must be 'mean' or 'prob' (got {mode!r})")


def _means_from_sums(forest: Forest, leaf_reward: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(forest.x.shape[0], dtype=torch.float64)
    leaves = forest.leaves
    total[leaves] = leaf_reward.to(torch.float64)
    for d in range(forest.steps, 0, -1):
        idx = torch.nonzero(forest.depth == d).flatten()
        total.index_add_(0, forest.parent[idx], total[idx])
    return (total / forest.leaves_below()).float()


def _normalise(values: torch.Tensor) -> torch.Tensor:
    if values.numel() < 2:
        return torch.zeros_like(values)
    std = values.std()
    if not torch.isfinite(std) or std < 1e-6:
        return torch.zeros_like(values)
    return (values - values.mean()) / (std + 1e-8)


def depth_advantages(forest: Forest, node_reward: torch.Tensor) -> torch.Tensor:
    """(N,) per prompt and depth: (r − mean) / (std + 1e-8) over the nodes of that depth (unbiased std);
    0 where a depth holds one node or no spread."""
    adv = torch.zeros_like(node_reward)
    for p in range(forest.num_prompts):
        in_p = forest.prompt == p
        for d in range(forest.steps + 1):
            idx = torch.nonzero(in_p & (forest.depth == d)).flatten()
            adv[idx] = _normalise(node_reward[idx])
    return adv


def leaf_advantages(forest: Forest, node_reward: torch.Tensor) -> torch.Tensor:
    """(N,) per prompt: (r_n − mean of the leaves) / (std of the leaves + 1e-8) — GRPO's group
    normalisation of the terminal reward, applied to every node through its fused reward."""
    adv = torch.zeros_like(node_reward)
    leaf = forest.depth == forest.steps
    for p in range(forest.num_prompts):
        in_p = forest.prompt == p
        lv = node_reward[in_p & leaf]
        std = lv.std() if lv.numel() > 1 else torch.tensor(0.0)
        if lv.numel() < 2 or not torch.isfinite(std) or std < 1e-6:
            continue
        adv[in_p] = (node_reward[in_p] - lv.mean()) / (std + 1e-8)
    return adv


# --- which edges are trained ----------------------------------------------------------------------

def width_prune(forest: Forest, edges: torch.Tensor, adv: torch.Tensor, last_split: int,
                ratio: float = 0.5, mode: int = 2) -> torch.Tensor:
    """Keep all edges up to the last split; of the edges after it (step > last split), keep per prompt
    mode 2: the best ⌊ρn/2⌋ and the worst ⌈ρn/2⌉ by advantage; mode 1: per post-split chain the
    first round(ρ·len) after a stable sort by advantage (which, since a chain shares one advantage,
    is its first-listed steps: the reference's behaviour)."""
    step = forest.depth[edges] - 1
    keep = [edges[step <= last_split]]
    for p in range(forest.num_prompts):
        post = edges[(step > last_split) & (forest.prompt[edges] == p)]
        if post.numel() == 0:
            continue
        if mode == 2:
            order = post[torch.sort(adv[post], stable=True).indices]
            n = post.numel()
            worst, best = _ceil_half(ratio * n), int(ratio * n) // 2
            keep += [order[:worst], order[n - best:] if best else order[:0]]
        elif mode == 1:
            first_post = post[forest.depth[post] == last_split + 2]
            chain_of = _chain_ids(forest, post, first_post)
            for c in range(first_post.numel()):
                members = post[chain_of == c]
                members = members[torch.sort(-adv[members], stable=True).indices]
                keep.append(members[:round(ratio * members.numel())])
        else:
            raise ValueError(f"width pruning mode must be 1 or 2 (got {mode})")
    return torch.sort(torch.cat(keep)).values


def _ceil_half(x: float) -> int:
    n = int(x)
    return n - n // 2


def _chain_ids(forest: Forest, post: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """For each post-split edge, which chain (index into heads) it belongs to."""
    head_of = torch.full((forest.x.shape[0],), -1, dtype=torch.long)
    head_of[heads] = torch.arange(heads.numel())
    for i in post.tolist():   # parents precede children, so one pass in creation order
        if head_of[i] < 0:
            head_of[i] = head_of[forest.parent[i]]
    return head_of[post]


def depth_prune(forest: Forest, edges: torch.Tensor, depths) -> torch.Tensor:
    """Drop the edges whose child depth is in `depths`."""
    if not depths:
        return edges
    drop = torch.isin(forest.depth[edges], torch.tensor(sorted(depths), dtype=torch.long))
    return edges[~drop]


@dataclass
class Transitions:
    """Training transitions: the edge (x_parent → x_child at step j) with its advantage and old log-prob."""

    x: torch.Tensor
    x_next: torch.Tensor
    step: torch.Tensor
    cond: torch.Tensor
    advantage: torch.Tensor
    old_logp: torch.Tensor
    logp_scale: torch.Tensor
    prompt: torch.Tensor

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def take(self, idx: torch.Tensor) -> "Transitions":
        return Transitions(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


def transitions(forest: Forest, edges: torch.Tensor, adv: torch.Tensor) -> Transitions:
    par = forest.parent[edges]
    return Transitions(x=forest.x[par], x_next=forest.x[edges], step=forest.depth[edges] - 1,
                       cond=forest.cond[forest.prompt[edges]], advantage=adv[edges].float(),
                       old_logp=forest.logp[edges], logp_scale=forest.logp_scale[edges],
                       prompt=forest.prompt[edges])
