"""``DyMoEConfig``: the architecture and routing hyper-parameters of a DyMoE model, persisted as JSON.

Standard library only (style.md §6.2): importable without torch, transformers or LLaVA.

Every field has a default and a ``metadata["help"]`` string that cites ``docs/method.md`` (the
reconstructed method spec) with its provenance tag: [C] = the port of the official code, [N] = the paper
notes, [I] = our inference, [?] = unknown upstream value.  ``from_dict`` accepts missing keys (defaults)
but rejects unknown keys and newer ``format_version`` values, so a checkpoint written by a newer
``llava_dymoe`` fails loudly instead of being half-read.

Example::

    cfg = DyMoEConfig(top_k=8)
    cfg.save("out/dymoe_config.json")
    assert DyMoEConfig.load("out/dymoe_config.json") == cfg
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List

FORMAT_VERSION = 1

#: The seven Llama projections DyMoE adapts (method.md §1.2 [C]).
KNOWN_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: Router kinds (``DyMoEConfig.router``); "cosine" is DyMoE's, the others serve the baselines.
ROUTERS = ("cosine", "linear", "none")
#: Token-to-bank assignment rules (``DyMoEConfig.assign_rule``); "paper" is method.md's.
ASSIGN_RULES = ("paper", "cascade", "given")
#: Targets of the specialisation loss (``DyMoEConfig.spe_target``); "paper" is method.md's.
SPE_TARGETS = ("paper", "tag")
#: How TAG measures the gap between group scores (``DyMoEConfig.tag_gap``); "similarity" is method.md's.
TAG_GAPS = ("similarity", "distance")
#: Initialisations of a new bank's router rows (``DyMoEConfig.router_init``); "kaiming" is method.md's.
ROUTER_INITS = ("kaiming", "centroids")
#: What the cascade's bank decision scores tokens against (``DyMoEConfig.bank_keys``); "router" is the cascade's.
BANK_KEYS = ("router", "refreshed", "fitted")
#: What the cascade decides a bank for (``DyMoEConfig.bank_scope``); "token" is the cascade's.
BANK_SCOPES = ("token", "sequence")
#: Who sets the per-sequence bank weights of ``assign_rule="given"`` at inference (``DyMoEConfig.task_selector``).
TASK_SELECTORS = ("none", "oracle", "hide", "prism", "shortlist")
#: The published selectors that pick the bank from per-task anchors alone (either answers the other's checkpoint).
ANCHOR_SELECTORS = ("hide", "prism")
#: Every selector that reads per-task anchors fitted after each task (``dymoe_anchors.safetensors``).
FITS_ANCHORS = ANCHOR_SELECTORS + ("shortlist",)


def _f(default: Any, help: str) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DyMoEConfig:
    """Architecture + routing configuration of DyMoE (method.md §1–§3).

    Derived quantities: ``bank_rank = experts_per_task * expert_rank`` (rank of one task's LoRA bank,
    64 by default) and ``scaling = lora_alpha / bank_rank`` (method.md §1.3: the same factor multiplies
    old and new experts).
    """

    target_modules: List[str] = _f(
        list(KNOWN_TARGET_MODULES),
        "Linear projections of every LLM decoder layer that get experts (method.md §1.2 [C]: all seven).")
    experts_per_task: int = _f(16, "Experts added per task per projection (method.md §1.3 [C]).")
    expert_rank: int = _f(4, "Rank of one LoRA expert; the task bank has rank experts_per_task*expert_rank "
                             "= 64 (method.md §1.3 [C]).")
    lora_alpha: float = _f(128.0, "LoRA alpha; scaling = alpha / bank_rank (method.md §1.3). Upstream value "
                                  "[?]; the port uses 128 [C], which matches CoIN's alpha = 2r [I].")
    lora_dropout: float = _f(0.05, "Dropout on the input of A (method.md §1.3; port default 0.05 [C], "
                                   "upstream [?]).")
    top_k: int = _f(16, "Experts kept per token before the softmax, for routing and RSR "
                        "(method.md §1.4, §3.2 [C]).")
    router: str = _f("cosine", "Router kind. 'cosine': DyMoE's cosine router z = s*cos(x, w) (method.md §1.4 [C]); "
                               "'linear': plain dot-product logits z = x.w (CoIN's MoELoRA gate, a baseline); "
                               "'none': no router, every expert has weight 1, so the banks are summed (LoRA, "
                               "O-LoRA baselines).")
    router_scale: float = _f(1.0, "Cosine router scale s: z = s*cos(x, w). s <= 0 falls back to the plain "
                                  "dot product x.w (method.md §1.4 [C]).")
    router_temperature: float = _f(0.01, "Routing softmax temperature T_route (method.md §1.4 [C]).")
    tau: float = _f(0.2, "TAG ambiguity threshold on D_rel (method.md §2, §3.1 [N][C]).")
    use_tag: bool = _f(True, "Apply Token Assignment Guidance while training task >= 2 (method.md §3.1).")
    rsr_temperature: float = _f(0.1, "Softmax temperature of the RSR soft weights (method.md §3.2 [C]).")
    c_exc: float = _f(1e-3, "Coefficient of the RSR exclusivity loss (method.md §3.3 [C]); 0 = off.")
    c_spe: float = _f(1e-3, "Coefficient of the RSR specialization loss (method.md §3.3 [C]); 0 = off.")
    c_aux: float = _f(0.0, "Coefficient of the Switch-style balance loss over the new experts "
                           "(method.md §3.3 [N]; not in the upstream code [C], hence 0).")
    rsr_start: float = _f(0.5, "Fraction of a task's steps before the RSR ramp starts; the factor then "
                               "rises linearly to 1 at the end of the task (method.md §3.3 [C]).")
    expand: bool = _f(True, "Add a new trainable bank (and router rows) per task and freeze the old ones "
                            "(method.md §1.5 [C]). False = one bank for the whole sequence, trained again on "
                            "every task (the sequential LoRA and MoELoRA baselines).")
    c_orth: float = _f(0.0, "O-LoRA orthogonality coefficient lambda_1: adds lambda_1 * sum over adapted "
                            "projections of sum_{old banks} |A_new A_old^T| (entrywise L1) to the loss. 0 = off "
                            "(not part of DyMoE; the olora baseline uses O-LoRA's 0.5).")
    # ---- beyond the paper (opt-in; the defaults are method.md's recipe) -------------------------------
    assign_rule: str = _f("paper", "Token-to-bank assignment. 'paper': TAG splits old/new while training, inference "
                                   "routes over all experts with no TAG (method.md §1.6, §3.1). 'cascade' (beyond "
                                   "the paper): TAG's test applied bank by bank, newest first, at training AND at "
                                   "inference: a token goes to the newest bank that beats every earlier bank by "
                                   "D_rel > tau, else to the first bank (core.routing.cascade_assignment); needs "
                                   "use_tag. No task id. 'given' (the oracle_bank / hide_selector baselines): "
                                   "while training, every token uses only the newest bank (one bank per task, "
                                   "trained on its own task's data); at inference the banks are weighted per "
                                   "sequence by DyMoEContext.bank_weights [batch, tasks], set by a model-level "
                                   "selector before the LLM forward (one-hot = the task id), times the top-k "
                                   "(top_k capped at experts_per_task) softmax of the router logits inside each "
                                   "bank (core/rules/given.py); an inference forward without bank_weights is "
                                   "refused. Needs a router and expand.")
    spe_target: str = _f("paper", "Target y of the specialisation loss. 'paper': y = 1 - max_old w, above 0.5 for "
                                  "almost every token (method.md §3.2). 'tag' (beyond the paper): y = 1 where TAG "
                                  "calls the token new, 0 where it calls it old or ambiguous.")
    router_init: str = _f("kaiming", "Init of a new bank's router rows. 'kaiming': kaiming_uniform(a=sqrt(5)) "
                                     "(method.md §1.3 [C]). 'centroids' (beyond the paper): spherical k-means "
                                     "centroids of the new task's own inputs to each projection, from "
                                     "router_init_batches training batches run before the first step, so the "
                                     "task's tokens are recognisable from step 0.")
    router_init_batches: int = _f(4, "Training batches read for router_init='centroids' (unused otherwise).")
    router_train: bool = _f(True, "Whether the new bank's router rows are trained (method.md §1.5: they are). False "
                                  "(beyond the paper; needs router_init='centroids'): the rows stay the centroids "
                                  "of the task's inputs they were set to, so the bank's region of the input space "
                                  "is fixed by its own task's tokens and cannot grow toward earlier tasks' tokens "
                                  "while the task trains; only the experts (A, B) learn.")
    bank_keys: str = _f("router", "What the cascade's bank decision scores a token against (assign_rule='cascade'). "
                                  "'router': the router rows, as the gate does. 'refreshed' (beyond the paper; "
                                  "needs router_init='centroids'): a separate, never-trained key set per bank, "
                                  "the bank's router rows as warm-started, re-centred at the end of its task on "
                                  "the task's inputs as the trained model computes them (k-means from the "
                                  "current keys); the router rows and so the gate inside a bank are untouched. "
                                  "Stored in the checkpoint as dymoe_key. 'fitted': as 'refreshed', and the keys "
                                  "are also fitted the same way before the first step, through the model that "
                                  "trains (the new bank present, its B = 0), so that training starts with the bank "
                                  "decisions the keys will make: fitted on inputs computed with the new bank set "
                                  "aside, they disagree with them wherever an upstream projection's decision moves "
                                  "to the new bank (docs/beyond-the-paper.md section 7). With assign_rule='given' "
                                  "and bank_scope='sequence' (key_selector), 'fitted' keys are fitted at the end of "
                                  "the task only (training never reads them).")
    bank_scope: str = _f("token", "What the cascade decides a bank for (assign_rule='cascade'). 'token': each token "
                                  "on its own scores. 'sequence' (beyond the paper): each sequence, on the mean of "
                                  "its valid tokens' bank scores, so all its tokens share one bank per projection "
                                  "(core.routing.sequence_cascade_assignment); at inference the prompt's decision "
                                  "is kept for the tokens generated after it. No task id. With assign_rule='given' "
                                  "(the key_selector method; needs bank_keys='fitted'): training uses the newest "
                                  "bank alone and this decision picks one bank per sequence at inference only.")
    sequence_tau: float = _f(0.0, "Margin of the per-sequence decision (bank_scope='sequence'): a bank claims a "
                                  "sequence when its mean score beats every earlier bank's by D_rel > sequence_tau. "
                                  "0 = the bank with the highest mean score (ties to the earlier bank). The "
                                  "token-level tau (0.2) on mean scores claimed no sequence for the new bank (d = 128, "
                                  "seeds 0-1: TAG's new share 0 at every step, so no new bank trained; "
                                  "docs/beyond-the-paper.md section 7).")
    router_refresh: bool = _f(False, "Beyond the paper (needs router_init='centroids'): at the end of the task the new "
                                     "bank's router rows are re-centred on router_init_batches batches of the task's "
                                     "inputs as the trained model computes them (k-means started from the current "
                                     "rows, so each row keeps its experts). The rows were set before the task "
                                     "trained, from inputs the task's own bank then changed; later banks' rows are "
                                     "set from inputs that pass through it. False = the rows are left as trained.")
    tag_gap: str = _f("similarity", "How TAG's D_rel measures the gap between the best new and best old score. "
                                    "'similarity': |c_new - c_old| / max(|c_new|, |c_old|) (method.md §2). "
                                    "'distance' (beyond the paper): the same gap over the larger cosine distance "
                                    "max(s - c_new, s - c_old), s = router_scale: 'tau closer to one group', "
                                    "which does not shrink when all scores are high (warm-started rows); needs "
                                    "the cosine router.")
    task_selector: str = _f("none", "Who gives the per-sequence bank weights of assign_rule='given' at inference "
                                    "(integration/selector.py). 'none': no selector. 'oracle' (the oracle_bank "
                                    "baseline, an UPPER BOUND): the true task of the evaluation, from "
                                    "DYMOE_EVAL_TASK_ID, one-hot. 'hide' (the hide_selector baseline, after "
                                    "HiDe-LLaVA): softmax over tasks of the mean cosine of the input's image and "
                                    "text features to each task's anchors (mean features of its training samples, "
                                    "fitted at the end of the task and saved with the checkpoint). 'prism' (the "
                                    "prism_selector baseline, Prism's port of HiDe-LLaVA): the same anchors and "
                                    "similarity, one-hot on the most similar task. 'shortlist' (the anchored_keys "
                                    "candidate, beyond the papers; needs the key_selector layout: assign_rule given, "
                                    "bank_scope sequence, bank_keys fitted): the same anchors name the "
                                    "selector_shortlist most similar tasks, and the fitted keys choose one bank "
                                    "among them per sequence and projection.")
    selector_temperature: float = _f(0.1, "Softmax temperature of task_selector='hide' over the tasks' similarities "
                                          "(HiDe-LLaVA's 0.1).")
    selector_shortlist: int = _f(2, "task_selector='shortlist': how many of the most similar tasks (by the anchors) "
                                    "the keys choose among (2, fixed before any run: docs/beyond-the-paper.md "
                                    "section 8, candidate 2).")
    selector_samples: int = _f(512, "Training samples (a seeded draw) whose mean features make a task's anchors for "
                                    "task_selector='hide' or 'prism' (HiDe-LLaVA averages over every training "
                                    "sample; ours).")
    num_tasks: int = _f(0, "Number of task banks present in the saved state (0 for a fresh model). Equals the "
                           "number of tasks learned when expand is True; 1 after any task when it is False.")
    format_version: int = _f(FORMAT_VERSION, "Version of this JSON layout.")

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        if isinstance(self.target_modules, (str, bytes)) or not isinstance(self.target_modules, (list, tuple)):
            raise ValueError(f"target_modules must be a list of module names, got {self.target_modules!r}")
        self.target_modules = list(self.target_modules)
        if not self.target_modules:
            raise ValueError("target_modules must not be empty")
        unknown = [m for m in self.target_modules if m not in KNOWN_TARGET_MODULES]
        if unknown:
            raise ValueError(f"target_modules: unknown module name(s) {unknown}; known: {list(KNOWN_TARGET_MODULES)}")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError(f"target_modules contains duplicates: {self.target_modules}")
        for name in ("experts_per_task", "expert_rank", "top_k"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_tasks", self.num_tasks, minimum=0)
        _check_int("router_init_batches", self.router_init_batches, minimum=1)
        _check_int("selector_samples", self.selector_samples, minimum=1)
        _check_int("selector_shortlist", self.selector_shortlist, minimum=1)
        _check_int("format_version", self.format_version, minimum=1)
        if self.format_version > FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is newer than this llava_dymoe supports "
                             f"({FORMAT_VERSION}); upgrade llava_dymoe to read this checkpoint")
        for name in ("lora_alpha", "router_temperature", "rsr_temperature", "selector_temperature"):
            _check_real(name, getattr(self, name))
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        _check_real("router_scale", self.router_scale)
        for name in ("c_exc", "c_spe", "c_aux", "c_orth"):
            _check_real(name, getattr(self, name))
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("tau", "rsr_start", "sequence_tau"):
            _check_real(name, getattr(self, name))
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        _check_real("lora_dropout", self.lora_dropout)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout!r}")
        for name in ("use_tag", "expand", "router_train", "router_refresh"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {list(ROUTERS)}, got {self.router!r}")
        for name, choices in (("assign_rule", ASSIGN_RULES), ("spe_target", SPE_TARGETS),
                              ("router_init", ROUTER_INITS), ("tag_gap", TAG_GAPS), ("bank_keys", BANK_KEYS),
                              ("bank_scope", BANK_SCOPES), ("task_selector", TASK_SELECTORS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.assign_rule == "cascade" and (not self.use_tag or self.router == "none"):
            raise ValueError("assign_rule='cascade' applies TAG's test bank by bank at training and inference: it "
                             "needs --dymoe_use_tag True and a router (--dymoe_router cosine)")
        if self.assign_rule == "given" and (self.router == "none" or not self.expand):
            raise ValueError("assign_rule='given' weighs one bank per task by the context's bank_weights and gates "
                             "inside each bank on the router logits: it needs a router (--dymoe_router cosine or "
                             f"linear) and --dymoe_expand True, got router={self.router!r}, expand={self.expand!r}")
        if self.tag_gap == "distance" and (self.router != "cosine" or self.router_scale <= 0):
            raise ValueError("tag_gap='distance' measures TAG's gap in cosine distance: it needs --dymoe_router "
                             f"cosine with --dymoe_router_scale > 0, got router={self.router!r}, "
                             f"router_scale={self.router_scale!r}")
        if self.router_init == "centroids" and self.router != "cosine":
            raise ValueError("router_init='centroids' sets cosine-router rows to centroids of the task's inputs: "
                             f"it needs --dymoe_router cosine, got {self.router!r}")
        key_selector = self.assign_rule == "given" and self.bank_scope == "sequence"
        if key_selector and (self.bank_keys != "fitted" or self.task_selector not in ("none", "shortlist")):
            raise ValueError("assign_rule='given' with bank_scope='sequence' (the key_selector method) picks each "
                             "sequence's bank by its fitted keys: it needs --dymoe_bank_keys fitted and "
                             f"--dymoe_task_selector none (or shortlist), got bank_keys={self.bank_keys!r}, "
                             f"task_selector={self.task_selector!r}")
        if self.task_selector == "shortlist" and not key_selector:
            raise ValueError("task_selector='shortlist' names the tasks among which the fitted keys choose one bank "
                             "per sequence: it needs --dymoe_assign_rule given, --dymoe_bank_scope sequence and "
                             f"--dymoe_bank_keys fitted (the key_selector layout), got assign_rule="
                             f"{self.assign_rule!r}, bank_scope={self.bank_scope!r}")
        if (self.bank_keys != "router" and not key_selector
                and (self.assign_rule != "cascade" or self.router_init != "centroids")):
            raise ValueError(f"bank_keys={self.bank_keys!r} keeps per-bank keys for the cascade's bank decision, set "
                             "from the task's inputs: it needs --dymoe_assign_rule cascade and --dymoe_router_init "
                             "centroids (or --dymoe_assign_rule given with --dymoe_bank_scope sequence), "
                             f"got assign_rule={self.assign_rule!r}, router_init={self.router_init!r}")
        if self.bank_scope == "sequence" and self.assign_rule not in ("cascade", "given"):
            raise ValueError("bank_scope='sequence' applies the cascade's bank decision per sequence: it needs "
                             f"--dymoe_assign_rule cascade (or given), got assign_rule={self.assign_rule!r}")
        if self.task_selector != "none" and (self.assign_rule != "given" or not self.expand):
            raise ValueError(f"task_selector={self.task_selector!r} sets the per-task bank weights of the 'given' "
                             "rule: it needs --dymoe_assign_rule given and --dymoe_expand True (one bank per task), "
                             f"got assign_rule={self.assign_rule!r}, expand={self.expand!r}")
        if self.router_refresh and self.router_init != "centroids":
            raise ValueError("router_refresh=True re-centres rows that were set from the task's inputs: add "
                             "--dymoe_router_init centroids (or keep --dymoe_router_refresh False)")
        if not self.router_train and self.router_init != "centroids":
            raise ValueError("router_train=False keeps the new router rows at their initialisation, which only means "
                             "something for rows set from the task's inputs: add --dymoe_router_init centroids (or "
                             "keep --dymoe_router_train True)")
        if self.router == "none":
            routed = [n for n in ("use_tag", "c_exc", "c_spe", "c_aux") if getattr(self, n)]
            if routed:
                raise ValueError(f"router='none' sums the banks with weight 1, so there are no routing scores "
                                 f"for {routed}: set --dymoe_use_tag False and --dymoe_c_exc/c_spe/c_aux 0, or "
                                 f"use --dymoe_router cosine")

    # ------------------------------------------------------------------ derived
    @property
    def bank_rank(self) -> int:
        """Rank of one task's bank: ``experts_per_task * expert_rank`` (method.md §1.3)."""
        return self.experts_per_task * self.expert_rank

    @property
    def scaling(self) -> float:
        """LoRA scaling ``lora_alpha / bank_rank`` (method.md §1.3 [C])."""
        return float(self.lora_alpha) / self.bank_rank

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DyMoEConfig":
        """Build from a dict; missing keys take defaults, unknown keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"DyMoEConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"DyMoEConfig: unknown key(s) {unknown} (format_version "
                             f"{data.get('format_version', '?')}); this file was probably written by a newer "
                             f"llava_dymoe. Known keys: {sorted(known)}")
        return cls(**data)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DyMoEConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"DyMoEConfig.from_json: invalid JSON ({e})") from e
        return cls.from_dict(data)

    def save(self, path: str) -> None:
        """Write the config as JSON to ``path`` (parent directories are created)."""
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str) -> "DyMoEConfig":
        with open(path, "r", encoding="utf-8") as fh:
            return cls.from_json(fh.read())


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_real(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
