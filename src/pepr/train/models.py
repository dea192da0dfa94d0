"""timm models for ``pepr train``: creation, init strategies, checkpoints.

Init strategies (``--init``):

``scratch``
    Random initialisation (timm's defaults).
``imagenet``
    timm's pretrained weights for the architecture, from the Hugging Face cache (honours
    ``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``); classifier reset and first conv
    adapted to the data's channels by timm. Offline and not cached: a clear error.
``checkpoint:PATH``
    A local state dict (``.pt``/``.pth`` saved by ``torch.save``, as ``pepr train --save-model``
    writes, or ``.safetensors``) of the same architecture. When the checkpoint was trained on a
    different number of classes the classifier is re-initialised; a different number of input
    channels is adapted with timm's ``adapt_input_conv`` (sum 3->1, repeat 1->3). Any other shape
    mismatch is an error (a checkpoint of another architecture).

torch and timm are imported inside functions so that importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pepr.errors import PeprInputError
from pepr.train.imports import import_timm

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class InitSpec:
    """A parsed ``--init`` value: ``kind`` in {"scratch", "imagenet", "checkpoint"}, ``path`` for checkpoints."""

    kind: str
    path: Path | None = None


def parse_init(init: str) -> InitSpec:
    """Parse an ``--init`` value; :class:`PeprInputError` for unknown syntax (files are not checked here)."""
    text = (init or "").strip()
    if text in ("scratch", "imagenet"):
        return InitSpec(kind=text)
    if text.startswith("checkpoint:"):
        path_text = text[len("checkpoint:") :]
        if not path_text:
            raise PeprInputError("init 'checkpoint:' needs a file: checkpoint:PATH (a state dict from --save-model)")
        return InitSpec(kind="checkpoint", path=Path(path_text).expanduser())
    raise PeprInputError(f"unknown init {init!r}; use 'scratch', 'imagenet' or 'checkpoint:PATH'")


def architecture_name(model: str) -> str:
    """The timm architecture of a model name (``resnet18.a1_in1k`` -> ``resnet18``)."""
    return model.split(".", 1)[0]


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch file (unwrapping common containers)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle with code (refused by weights_only)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise PeprInputError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {first}); it must be a plain state dict of "
            "tensors (.safetensors, or .pt/.pth loadable with torch.load(weights_only=True), e.g. from --save-model)"
        ) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PeprInputError(f"checkpoint {path} is not a state dict of tensors (save one with --save-model)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _load_checkpoint_into(model: torch.nn.Module, path: Path, in_chans: int) -> str:
    """Load a checkpoint into ``model`` adapting the classifier/first conv; returns a one-line summary."""
    import torch

    import_timm()
    from timm.models import adapt_input_conv

    state = _load_state_dict(path)
    target = model.state_dict()
    classifier_prefixes = _as_tuple(model.pretrained_cfg.get("classifier"))
    first_convs = _as_tuple(model.pretrained_cfg.get("first_conv"))
    unexpected = sorted(set(state) - set(target))
    missing = sorted(set(target) - set(state))
    if unexpected or missing:
        raise PeprInputError(
            f"checkpoint {path} does not match this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); "
            "was it saved from another model?"
        )
    adapted: list[str] = []
    reset_head = False
    for key, value in state.items():
        wanted = target[key].shape
        if value.shape == wanted:
            continue
        if any(key.startswith(prefix + ".") for prefix in classifier_prefixes):
            state[key] = target[key]  # keep this model's fresh classifier
            reset_head = True
        elif any(key == conv + ".weight" for conv in first_convs) and value.ndim == len(wanted):
            state[key] = adapt_input_conv(in_chans, value.float(), base_chans=value.shape[1]).to(value.dtype)
            adapted.append(key)
        else:
            raise PeprInputError(
                f"checkpoint {path}: tensor {key} has shape {tuple(value.shape)}, the model needs "
                f"{tuple(wanted)}; a checkpoint of another architecture or configuration?"
            )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    notes = []
    if reset_head:
        notes.append("classifier re-initialised (different number of classes)")
    if adapted:
        notes.append(f"first conv adapted to {in_chans} channel(s)")
    return f"loaded checkpoint {path}" + (f" ({'; '.join(notes)})" if notes else "")


class ModelInputError(Exception):
    """The model cannot be built or run on this input (kernel > image, fixed input size, OOM).

    Not a user error and not a crash: the run is recorded with status "failed".
    """


def create_model(
    model: str, init: str, num_classes: int, in_chans: int, image_size: int
) -> tuple[torch.nn.Module, str]:
    """Build a timm model for ``in_chans`` x ``image_size`` inputs and ``num_classes`` outputs.

    ``img_size`` is passed to architectures that take it (ViTs and other fixed-grid models).
    Returns the model (on CPU, float32) and a one-line description of its initialisation.
    Raises :class:`PeprInputError` for bad names/files, :class:`ModelInputError` when the
    architecture cannot be configured for this input.
    """
    timm = import_timm()

    from pepr.train.checks import init_problems, model_catalogue, model_problems

    spec = parse_init(init)
    # the one model check (pepr.train.checks), as pepr train and planning run it
    problems = init_problems(init, check_checkpoint=True)[1] + model_problems(model, spec.kind, model_catalogue(model))
    if problems:
        raise PeprInputError("; ".join(problems))
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_chans)
    pretrained = spec.kind == "imagenet"

    def build(**extra: Any) -> torch.nn.Module:
        return timm.create_model(model, pretrained=pretrained, **kwargs, **extra)

    try:
        try:
            net = build(img_size=image_size)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            net = build()  # architectures without an img_size argument adapt to any input size
    except OSError as exc:  # huggingface_hub raises OSError subclasses when weights are unavailable
        raise PeprInputError(
            f"ImageNet weights for {model!r} are not available offline ({type(exc).__name__}: {exc}); "
            'download them once on a machine with internet (python -c "import timm; '
            f"timm.create_model('{model}', pretrained=True)\") into the Hugging Face cache (HF_HOME) "
            "that this job sees, or use --init scratch"
        ) from exc
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        raise ModelInputError(
            f"{model} cannot be built for {in_chans}x{image_size}x{image_size} input: {describe_exception(exc)}"
        ) from exc
    description = "ImageNet weights (timm)" if pretrained else "random init (scratch)"
    if spec.kind == "checkpoint":
        assert spec.path is not None
        description = _load_checkpoint_into(net, spec.path, in_chans)
    return net, description


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message`` (messages of torch errors can be pages long)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def save_model(model: torch.nn.Module, path: Path) -> None:
    """Save the weights as a plain state dict (``.safetensors`` by suffix, else ``torch.save``),
    atomically: into a new, unpredictably named sibling (``O_EXCL|O_NOFOLLOW``), then renamed
    onto ``path``, so a link planted at either name is never written through."""
    import torch

    from pepr.results.runs import write_new_then_replace

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        payload = save(state)
        write_new_then_replace(path, lambda handle: handle.write(payload))
    else:
        write_new_then_replace(path, lambda handle: torch.save(state, handle))


def count_trainable_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
