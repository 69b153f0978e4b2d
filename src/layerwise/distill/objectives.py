"""Healing objectives: what a compressed model is trained on after pruning, keyed by the name users
type (`--heal NAME`, `heal:` in a recipe, `"kind"` in a job file).

One objective is one class: `module()` wraps teacher and student into the trainable thing whose
`forward(ids)` returns the loss (what `distill.driver.train` runs, in one process or under
`accelerate launch`); `healed()` turns the trained module back into the pruned model; `save()` and
`trained()` move the trained weights between a launched job and the process that started it; `job()`
names the models a launched job loads.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

from pydantic import Field
from torch import nn

from ..registry import Method, MethodConfig, Registry
from .modules import IntervalStudents, LMFinetune, LogitKD

HEALERS: Registry[type["Heal"]] = Registry("heal", "--heal", "healing objective")


class Heal(Method):
    needs = frozenset({"training", "whole_model"})
    trains = True
    # which model the trainable module is built around: the pruned student, or only the teacher
    # (interval students are cut from the teacher's blocks)
    needs_student = True

    def module(self, teacher: nn.Module, student: nn.Module | None, intervals: list[dict]) -> nn.Module:
        raise NotImplementedError

    def prepare(self, teacher: nn.Module, intervals: list[dict], samples) -> None:
        """Work done once on calibration samples before training (closed-form fits); in this process."""

    def healed(self, module: nn.Module, teacher: nn.Module, intervals: list[dict]) -> nn.Module:
        raise NotImplementedError

    def job(self, teacher: str, student: str | None) -> dict:
        return {"teacher": teacher, "model": student}

    def from_job(self, job: dict, load) -> tuple[nn.Module, object]:
        """(trainable module, tokenizer) of a job file; `load(path)` loads a model."""
        student, teacher = load(job["model"]), load(job["teacher"])
        return self.module(teacher.model, student.model, job.get("intervals", [])), student.tokenizer

    def save(self, module: nn.Module, tokenizer, work: Path) -> None:
        from ..io.structured import save_model

        save_model(self.student_of(module), tokenizer, work / "model")

    def trained(self, work: Path, teacher: nn.Module, intervals: list[dict], load) -> nn.Module:
        """The trainable module with the weights a launched job saved in `work`."""
        return self.module(teacher, load(str(work / "model")).model, intervals)

    def student_of(self, module: nn.Module) -> nn.Module:
        return module.student


@HEALERS.register
class NoHeal(Heal):
    name = "none"
    description = "No training: the pruned model as it is."
    needs = frozenset()
    trains = False


@HEALERS.register
class IntervalDistill(Heal):
    name = "distill"
    description = ("Contiguous layer distillation (PPCL): one student block per removed interval, teacher-forced "
                   "on the frozen teacher's hidden states; intervals train independently.")
    needs_student = False

    class Config(MethodConfig):
        mse_weight: float = Field(0.0, ge=0)
        init: Literal["middle", "first", "last", "fresh"] = "middle"
        # block: a copy of one block of the interval; linear: a residual linear map fitted in closed
        # form (ridge) on calibration states, then fine-tuned like a block
        student: Literal["block", "linear"] = "block"
        # False: sequential training, each student fed the previous students' outputs (PPCL's foil)
        teacher_forcing: bool = True

    fitted: dict | None = None

    def prepare(self, teacher, intervals, samples):
        if self.config.student == "linear":
            from ..models.adapters import get_adapter
            from .standin import fit_standins

            self.fitted = fit_standins(teacher, get_adapter(teacher), [(iv["start"], iv["end"]) for iv in intervals],
                                       samples)

    def module(self, teacher, student, intervals):
        if self.config.student == "linear" and self.fitted is None:
            from ..errors import ConfigError

            raise ConfigError("linear stand-ins are fitted on calibration data first (prepare); "
                              "they train in one process")
        return IntervalStudents(teacher, intervals, self.config.init, self.config.mse_weight,
                                self.config.teacher_forcing, copy.deepcopy(self.fitted) if self.fitted else None)

    def healed(self, module, teacher, intervals):
        from ..prune.depth import assemble

        return assemble(copy.deepcopy(teacher), intervals, self.students(module))

    @staticmethod
    def students(module) -> dict:
        out = dict(module.students.items())
        for st in out.values():
            st.eval()
        return out

    def job(self, teacher, student):
        return {"teacher": teacher}

    def from_job(self, job, load):
        teacher = load(job["teacher"])
        return self.module(teacher.model, None, job["intervals"]), teacher.tokenizer

    def save(self, module, tokenizer, work):
        from safetensors.torch import save_file

        tensors = {f"{k}.{n}": t.detach().contiguous() for k, st in module.students.items()
                   for n, t in st.state_dict().items()}
        save_file(tensors, str(work / "students.safetensors"))

    def trained(self, work, teacher, intervals, load):
        from safetensors.torch import load_file

        flat = load_file(str(work / "students.safetensors"))
        module = self.module(teacher, None, intervals)
        for k, st in module.students.items():
            st.load_state_dict({n[len(k) + 1:]: v for n, v in flat.items() if n.startswith(k + ".")})
        return module


@HEALERS.register
class Finetune(Heal):
    name = "finetune"
    description = "Next-token fine-tuning of the whole pruned model (no teacher)."

    def module(self, teacher, student, intervals):
        for p in student.parameters():
            p.requires_grad_(True)
        return LMFinetune(student)

    def healed(self, module, teacher, intervals):
        return module.model.eval()

    def job(self, teacher, student):
        return {"model": student}

    def from_job(self, job, load):
        lm = load(job["model"])
        return self.module(None, lm.model, []), lm.tokenizer

    def student_of(self, module):
        return module.model


@HEALERS.register
class LogitDistill(Heal):
    name = "kd"
    description = "Logit distillation from the dense teacher: alpha*T^2*KL(teacher || student) + (1-alpha)*CE."

    class Config(MethodConfig):
        temperature: float = Field(2.0, gt=0)
        alpha: float = Field(1.0, ge=0, le=1)

    def module(self, teacher, student, intervals):
        for p in student.parameters():
            p.requires_grad_(True)
        return LogitKD(student, teacher, self.config.temperature, self.config.alpha)

    def healed(self, module, teacher, intervals):
        return module.student.eval()


def resolve_kind(kind: str) -> str:
    """Job files written before the registry called interval distillation 'intervals'."""
    return "distill" if kind == "intervals" else kind
