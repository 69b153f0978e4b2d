"""The reference models: stock `transformers` architectures, trained deterministically on `stdlib`.

They are deliberately narrow and trained for many tokens per parameter: a wide, undertrained model
loses almost nothing under compression and makes every method look equally good.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ZooSpec:
    name: str
    description: str
    architecture: str                 # transformers config class family
    config: dict                      # kwargs of the config class (vocab_size comes from the tokenizer)
    corpus: str = "stdlib"
    vocab_size: int = 4096
    seqlen: int = 256
    batch_size: int = 16
    steps: int = 1000                 # optimizer steps (epochs for image classifiers)
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_windows: int = 64            # windows of the validation split scored during training
    checkpoint_every: int = 100
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seqlen


SPECS: dict[str, ZooSpec] = {}


def register(spec: ZooSpec) -> ZooSpec:
    SPECS[spec.name] = spec
    return spec


register(ZooSpec(
    name="llama-tiny",
    description="4-block Llama (GQA 4/2 heads, hidden 128): fast tests and quick demos",
    architecture="llama",
    config=dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False, attention_bias=False, mlp_bias=False),
    steps=1500, lr=3e-3, warmup=100, eval_every=100, checkpoint_every=100, seed=0,
))

register(ZooSpec(
    name="llama-12l",
    description="12-block Llama (GQA 4/2 heads, hidden 128): the reference model for benchmarks",
    architecture="llama",
    config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=12, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False, attention_bias=False, mlp_bias=False),
    steps=3000, lr=2e-3, warmup=150, eval_every=150, checkpoint_every=100, seed=0,
))

register(ZooSpec(
    name="filler-lm",
    description=("4-block Llama (GQA 4/2 heads, hidden 128) trained on the filler-token key-value task: ~80% of "
                 "the tokens are fillers, so the tokens a pruner may skip are known (token-pruning test bed)"),
    architecture="llama",
    config=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False),
    corpus="filler-kv", batch_size=32, steps=2000, lr=2e-3, warmup=100, weight_decay=0.05, eval_every=100,
    checkpoint_every=100, seed=0, extra={"task": "filler-kv",
                                         "task_options": {"length": 128, "pairs": 12, "queries": 4}},
))

register(ZooSpec(
    name="resnet-digits",
    description=("CIFAR-style ResNet-20 shape (3 stages x 3 basic blocks, widths 16/32/64) classifying scikit-learn "
                 "digits placed at random offsets in noisy 12x12 canvases: the CNN of architecture search"),
    architecture="cifar_resnet",
    config=dict(num_channels=1, image_size=12, stage_widths=[16, 32, 64], stage_blocks=[3, 3, 3],
                stage_strides=[1, 2, 2]),
    corpus="digits", batch_size=64, steps=60, lr=0.1, warmup=0, weight_decay=5e-4, seed=0,
    extra={"task": "image-classification", "data": {"size": 12, "copies": 2, "noise": 0.2, "seed": 0}},
))

register(ZooSpec(
    name="vit-digits",
    description=("6-block ViT (hidden 64, 4 heads, MLP 192, 2x2 patches: 64 patch tokens + CLS) classifying "
                 "scikit-learn digits upsampled to noisy 16x16 canvases (one patch per digit pixel; the blank "
                 "borders and strokes make near-duplicate patches): the test bed of token merging and dropping"),
    architecture="vit",
    config=dict(image_size=16, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=6,
                num_attention_heads=4, intermediate_size=192, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, qkv_bias=True, layer_norm_eps=1e-6),
    corpus="digits", batch_size=64, steps=40, lr=1e-3, warmup=0, weight_decay=0.05, seed=0,
    extra={"task": "image-classification", "data": {"size": 16, "scale": 2, "copies": 4, "noise": 0.2, "seed": 0},
           "optimizer": "adamw", "warmup_epochs": 2},
))

register(ZooSpec(
    name="clip-digits",
    description=("CLIP-style dual encoder (stock CLIPModel: 4-block ViT image tower on 2x2 patches of a 16x16 canvas, "
                 "4-block causal text tower over captions, 64-d joint space) trained contrastively on digit "
                 "canvases and captions, classifying zero-shot with prompt templates it never saw: the test bed of "
                 "pruning across towers"),
    architecture="clip",
    config={"vision": dict(image_size=16, patch_size=2, num_channels=1, hidden_size=64, intermediate_size=192,
                           num_hidden_layers=4, num_attention_heads=4),
            "text": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4),
            "projection_dim": 64},
    corpus="digits", batch_size=64, steps=30, lr=1e-3, warmup=2, weight_decay=0.05, eval_every=5, seed=0,
    betas=(0.9, 0.98),
    extra={"task": "zero-shot-digits", "data": {"size": 16, "scale": 2, "copies": 4, "noise": 0.2, "seed": 0}},
))

register(ZooSpec(
    name="llava-quadrants",
    description=("LLaVA-style vision-language model (stock LlavaForConditionalGeneration: 2-block CLIP vision tower "
                 "on 2x2 patches of a 16x16 canvas = 64 vision tokens, 2-layer projector, 4-block Llama decoder "
                 "with GQA 4/2) answering which digit sits in the quadrant the question names: the relevant "
                 "quarter of the vision tokens is known (the test bed of vision-token pruning)"),
    architecture="llava",
    config={"vision": dict(image_size=16, patch_size=2, num_channels=1, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4),
            "text": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)},
    corpus="quadrants", batch_size=32, steps=3000, lr=2e-3, warmup=100, weight_decay=0.05, eval_every=250,
    seed=0, extra={"task": "quadrant-vqa", "data": {"size": 16, "noise": 0.2}, "aux_weight": 1.0},
))

register(ZooSpec(
    name="flow-gmm",
    description=("class-conditional rectified-flow velocity MLP (3x128 SiLU) on an 8-mode 2-D Gaussian mixture, "
                 "trained with half of its labels randomised so that it follows its prompt only ~60% of the time: "
                 "the base model of RL alignment (GRPO, BranchGRPO)"),
    architecture="flow_mlp",
    config=dict(data_dim=2, num_classes=8, hidden_size=128, num_layers=3, time_embed_dim=16, class_embed_dim=8),
    corpus="gmm", batch_size=512, steps=4000, lr=1e-3, min_lr_ratio=0.0, warmup=100, weight_decay=0.0,
    betas=(0.9, 0.999), eval_every=500, seed=0,
    extra={"task": "flow-matching", "data": {"modes": 8, "radius": 2.0, "std": 0.15, "label_noise": 0.5},
           "eval": {"steps": 20, "eta": 0.3, "shift": 1.0, "per_class": 256, "reward_width": 0.5}},
))

register(ZooSpec(
    name="judge-digits",
    description=("digit classifier on plain 8x8 digits (CIFAR-style ResNet, 3 stages of one block), trained with "
                 "1-pixel shifts and noise: used only as the judge of generated digits (prompt consistency, Frechet "
                 "distance on its features, the RL image reward)"),
    architecture="cifar_resnet",
    config=dict(num_channels=1, image_size=8, stage_widths=[16, 32, 64], stage_blocks=[1, 1, 1],
                stage_strides=[1, 2, 2], num_labels=10),
    corpus="digits8", batch_size=64, steps=40, lr=2e-3, warmup=2, weight_decay=5e-4, betas=(0.9, 0.999),
    eval_every=10, seed=0, extra={"task": "digit-judge", "augment": {"shift": 1, "noise": 0.15}},
))

register(ZooSpec(
    name="dit-digits",
    description=("class-conditional DiT (stock diffusers DiTTransformer2DModel: 12 blocks, hidden 64, 4 heads, 2x2 "
                 "patches of 8x8 digits = 16 tokens, adaLN-zero) trained with rectified flow matching: the "
                 "diffusion-transformer test bed (depth redundancy, token pruning, RL alignment)"),
    architecture="dit",
    config=dict(num_attention_heads=4, attention_head_dim=16, in_channels=1, out_channels=1, num_layers=12,
                sample_size=8, patch_size=2, num_embeds_ada_norm=10, norm_type="ada_norm_zero"),
    corpus="digits8", batch_size=128, steps=6000, lr=1e-3, min_lr_ratio=0.05, warmup=200, weight_decay=0.0,
    betas=(0.9, 0.99), eval_every=1000, seed=0,
    extra={"task": "flow-matching-images", "judge": "judge-digits",
           "eval": {"steps": 20, "eta": 0.3, "shift": 1.0, "per_class": 50}},
))

register(ZooSpec(
    name="unet-digit-pairs",
    description=("text-conditioned UNet (stock diffusers UNet2DConditionModel: 2 levels of 32/64 channels, "
                 "cross-attention at the top level of 8x16 = 128 tokens) trained with rectified flow matching on "
                 "8x16 canvases of a left and a right digit cell; prompts name the digit (or a blank) of each cell: "
                 "the test bed of token pruning in self-attention (SimPrune, ToMe-SD) and of OptiPrune's "
                 "initial-noise optimisation"),
    architecture="unet",
    config=dict(sample_size=(8, 16), in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                attention_head_dim=(2, 4), norm_num_groups=8),
    corpus="digit-pairs", batch_size=64, steps=5000, lr=1e-3, min_lr_ratio=0.05, warmup=200, weight_decay=0.0,
    betas=(0.9, 0.99), eval_every=1000, seed=0,
    extra={"task": "flow-matching-pairs", "judge": "judge-digits",
           "eval": {"steps": 20, "eta": 0.3, "shift": 1.0, "per_prompt": 10}},
))

register(ZooSpec(
    name="dit-digits-misaligned",
    description=("class-conditional DiT (stock diffusers DiTTransformer2DModel: 4 blocks, hidden 64, 16 tokens of 8x8 "
                 "digits) trained with rectified flow matching on labels half of which were replaced by random "
                 "classes, so it draws the digit it is asked for only about 55% of the time: the base model of RL "
                 "alignment on images (judge reward)"),
    architecture="dit",
    config=dict(num_attention_heads=4, attention_head_dim=16, in_channels=1, out_channels=1, num_layers=4,
                sample_size=8, patch_size=2, num_embeds_ada_norm=10, norm_type="ada_norm_zero"),
    corpus="digits8", batch_size=128, steps=3000, lr=1e-3, min_lr_ratio=0.05, warmup=200, weight_decay=0.0,
    betas=(0.9, 0.99), eval_every=1000, seed=0,
    extra={"task": "flow-matching-images", "judge": "judge-digits", "label_noise": 0.5,
           "eval": {"steps": 20, "eta": 0.3, "shift": 1.0, "per_class": 50}},
))
