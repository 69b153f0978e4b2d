from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from .app import app


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="A layerwise result directory (quantized, depth- or width-pruned, dense), "
                                "zoo:NAME or a save_pretrained directory."),
    format: str = typer.Option("gguf", "--format", "-f", help="gguf (llama.cpp) | compressed-tensors (vLLM, "
                               "transformers)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output file for gguf (default ./NAME-FLOAT.gguf), "
                                      "output directory for compressed-tensors."),
    float_type: str = typer.Option("f16", "--float-type", help="Tensors that are not quantized: f32 | f16 | bf16, "
                                   "or q8_0 | q5_0 | q4_0 to round float block linears as llama-quantize would."),
    k_quants: bool = typer.Option(False, "--k-quants", help="gguf: 2/3/6-bit codes as Q2_K/Q3_K/Q6_K and "
                                  "asymmetric 4/5-bit codes as Q4_K/Q5_K (smaller; scales rounded, error reported) "
                                  "instead of exactly as Q4_0/Q8_0."),
    runtime: str = typer.Option("vllm", "--runtime", help="compressed-tensors: vllm (4/8 bits, one width per fused "
                                "q/k/v and gate/up) | transformers (2-8 bits)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Write a result as one file another runtime executes; quantized codes are kept exact where the
    runtime's block types can hold them, and every tensor's error is checked after writing.

    Example: layerwise quantize zoo:llama-12l --bits 4 --high 4 --low 4 --group-size 32 --out runs/q4 &&
    layerwise export runs/q4 --format gguf --out runs/q4.gguf;
    layerwise export runs/q4 --format compressed-tensors --out runs/q4-ct
    """
    from ..export import export

    res = export(model, format, out, float_type=float_type, runtime=runtime, overwrite=overwrite,
                 k_quants=k_quants)
    if format != "gguf":
        console.print(f"wrote {res} (loads with stock from_pretrained when compressed-tensors is installed)")
        return
    from rich.table import Table

    s = res.summary()
    t = Table(title=f"{res.out} ({s['bytes'] / 2**20:.1f} MiB)", title_justify="left")
    for c in ("type", "tensors", "exact", "max |error|"):
        t.add_column(c, justify="right")
    for ty in sorted(s["types"]):
        rs = [r for r in res.records if r.type == ty]
        t.add_row(ty, str(len(rs)), str(sum(r.exact for r in rs)), f"{max(r.max_abs_error for r in rs):.3g}")
    console.print(t)
    if s["requantized"]:
        console.print(f"requantized (lossy, see {res.out}.json): {', '.join(s['requantized'][:6])}"
                      + (" …" if len(s["requantized"]) > 6 else ""))
