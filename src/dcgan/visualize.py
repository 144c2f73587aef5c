"""Pictures of a run: sample grids, labelled images and the loss curve."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw, PngImagePlugin
from torchvision.utils import make_grid

from dcgan.data import to_float, to_uint8
from dcgan.models import Generator
from dcgan.outputs import write_bytes, write_image
from dcgan.runlog import read_metrics


def square_columns(n: int) -> int:
    """Columns of the square-ish grid of n images: ceil(sqrt(n)), at least 1."""
    return max(1, math.ceil(math.sqrt(n)))


@torch.no_grad()
def grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Images in [-1, 1] -> one float grid image in [0, 1], square-ish by default."""
    nrow = nrow or square_columns(len(images))
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, normalize=True,
                     value_range=(-1, 1))


@torch.no_grad()
def save_samples(generator: Generator, z: torch.Tensor, path: Path, title: str,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
    """G(z) as a titled PNG sheet (see save_sheet), with BN in inference mode while sampling;
    returns the images. With `labels` (a conditional G, class i % K for z number i), one column
    per class."""
    images = generator.generate(z, labels=labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = generator.config.num_classes if labels is not None else None
    save_sheet(images, path, title, columns=columns)
    return images


@torch.no_grad()
def save_sheet(images: torch.Tensor, path: Path, title: str, min_tile: int = 64, columns: int | None = None,
               **meta) -> dict:
    """Images in [-1, 1] as one PNG grid that explains itself: tiles upscaled by an integer factor
    (nearest) to at least min_tile pixels, a title band on top, and the layout in the PNG's text
    chunks (title, tile, columns, rows, images, header, and `meta`); returns that layout."""
    images = images.detach().float().cpu()
    factor = max(1, -(-min_tile // images.shape[-1]))
    big = images.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    columns = columns or square_columns(len(images))
    pixels = to_uint8(grid(big, nrow=columns) * 2 - 1).permute(1, 2, 0).numpy()
    sheet = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    header = 16
    titled = Image.new("RGB", (sheet.width, sheet.height + header))
    titled.paste(sheet, (0, header))
    ImageDraw.Draw(titled).text((3, 2), title, fill=(255, 255, 255))
    layout = {"title": title, "tile": images.shape[-1] * factor, "columns": columns,
              "rows": -(-len(images) // columns), "images": len(images), "header": header, **meta}
    _save_png(titled, path, {key: str(value) for key, value in layout.items()})
    return layout


def _save_png(image: Image.Image, path: Path, text: dict[str, str]) -> None:
    """`image` as a PNG whose text chunks hold `text` (the figure's layout), written atomically."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    write_bytes(path, buffer.getvalue())


@torch.no_grad()
def annotate(images: torch.Tensor, labels: list[str], min_size: int = 64) -> torch.Tensor:
    """Images in [-1, 1] with a text label in the top-left corner of each (white on black), upscaled
    by an integer factor (nearest) to at least min_size pixels so the text stays legible."""
    import numpy as np

    images = images.detach().float().cpu()
    factor = max(1, -(-min_size // images.shape[-1]))
    big = images.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    out = []
    for x, label in zip(big, labels, strict=True):
        pixels = to_uint8(x).permute(1, 2, 0).numpy()
        img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        draw = ImageDraw.Draw(img)
        *_, right, bottom = draw.textbbox((1, 0), label)
        draw.rectangle((0, 0, right + 1, bottom + 1), fill=0)
        draw.text((1, 0), label, fill=255 if img.mode == "L" else (255, 255, 255))
        arr = torch.from_numpy(np.asarray(img).copy())
        out.append(to_float(arr[None] if arr.ndim == 2 else arr.permute(2, 0, 1)))
    return torch.stack(out)


def save_figure(rows: list[list[torch.Tensor | None]], path: Path, title: str, row_labels: list[str],
                column_labels: list[str] | None = None, tile_labels: list[list[str]] | None = None,
                marked: set[tuple[int, int]] = frozenset(), boxes: dict | None = None,
                column_groups: list[tuple[str, int]] | None = None, min_tile: int = 64, **meta) -> dict:
    """A figure that explains itself: rows of images in [-1, 1] (None: an empty cell), tiles
    upscaled to at least min_tile pixels, a title on top, a label left of each row, optionally a
    label above each column and on each tile, `marked` (row, column) tiles framed in red, and
    `boxes` {(row, column): [(x0, y0, x1, y1), ...]} in image pixels drawn on their tiles, and
    `column_groups` [(header, columns), ...] spanning consecutive columns above their labels. The
    layout (title, tile, row and column labels, tile labels, marked, and `meta`) goes into the PNG's
    text chunk `layout`; returns it."""
    first = next(x for row in rows for x in row if x is not None)
    factor = max(1, -(-min_tile // first.shape[-1]))
    tile, pad, band = first.shape[-1] * factor, 4, 14
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max(probe.textbbox((0, 0), text)[2] for text in row_labels) + 2 * pad
    top = band + (band if column_labels else 0) + (band if column_groups else 0)
    columns = max(len(row) for row in rows)
    width, height = left + columns * (tile + pad), top + len(rows) * (tile + pad)
    width = max(width, probe.textbbox((0, 0), title)[2] + 2 * pad)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 1), title, fill="black")
    j = 0
    for header, span in column_groups or []:
        draw.text((left + j * (tile + pad), band + 1), header, fill="black")
        if header:
            x0, x1 = left + j * (tile + pad), left + (j + span) * (tile + pad) - pad
            draw.line((x0, 2 * band - 2, x1, 2 * band - 2), fill="black")
        j += span
    for j, text in enumerate(column_labels or []):
        draw.text((left + j * (tile + pad), top - band + 1), text, fill="black")
    for i, row in enumerate(rows):
        y = top + i * (tile + pad)
        draw.text((pad, y + tile // 2 - 6), row_labels[i], fill="black")
        for j, image in enumerate(row):
            if image is None:
                continue
            x = left + j * (tile + pad)
            big = image.detach().float().cpu().repeat_interleave(factor, -1).repeat_interleave(factor, -2)
            pixels = to_uint8(big).permute(1, 2, 0).numpy()
            canvas.paste(Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB"),
                         (x, y))
            text = tile_labels[i][j] if tile_labels and j < len(tile_labels[i]) else ""
            if text:
                *_, right, bottom = draw.textbbox((x + 1, y), text)
                draw.rectangle((x, y, right + 1, bottom + 1), fill="black")
                draw.text((x + 1, y), text, fill="white")
            for x0, y0, x1, y1 in (boxes or {}).get((i, j), []):  # x1, y1 exclusive
                draw.rectangle((x + x0 * factor, y + y0 * factor, x + x1 * factor - 1, y + y1 * factor - 1),
                               outline="yellow")
            if (i, j) in marked:
                draw.rectangle((x - 2, y - 2, x + tile + 1, y + tile + 1), outline="red", width=2)
    layout = {"title": title, "tile": tile, "left": left, "top": top, "step": tile + pad,  # tile (i, j) at
              # (left + j * step, top + i * step)
              "rows": row_labels, "columns": column_labels or [], "column_groups": column_groups or [],
              "tiles": tile_labels or [], "marked": sorted(map(list, marked)),
              "boxes": sorted([i, j, list(map(list, b))] for (i, j), b in (boxes or {}).items()), **meta}
    _save_png(canvas, path, {"layout": json.dumps(layout)})
    return layout


def save_labelled(picture: torch.Tensor, path: Path, title: str, row_labels: list[str], row_step: int,
                  headers: list[tuple[str, int]] = (), first_row: int = 0, **meta) -> dict:
    """A picture (3, H, W) in [0, 1] made of rows `row_step` pixels apart (the first `first_row`
    pixels down), written with a title, a label left of each row and `headers` [(text, x)] above it;
    the layout (title, rows, headers, where the picture sits, and `meta`) in the PNG's text chunk
    `layout`. Returns the layout."""
    band, pad = 14, 4
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max(probe.textbbox((0, 0), text)[2] for text in row_labels) + 2 * pad
    top = band * (2 if headers else 1)
    pixels = to_uint8(picture.detach().float().cpu() * 2 - 1).permute(1, 2, 0).numpy()
    body = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    width = max(left + body.width, probe.textbbox((0, 0), title)[2] + 2 * pad)
    canvas = Image.new("RGB", (width, top + body.height), "white")
    canvas.paste(body, (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 1), title, fill="black")
    for text, x in headers:
        draw.text((left + x, band + 1), text, fill="black")
    for i, text in enumerate(row_labels):
        draw.text((pad, top + first_row + i * row_step + row_step // 2 - 6), text, fill="black")
    layout = {"title": title, "rows": row_labels, "headers": [list(h) for h in headers], "left": left,
              "top": top, "width": body.width, "height": body.height, **meta}
    _save_png(canvas, path, {"layout": json.dumps(layout)})
    return layout


def save_individual(images: torch.Tensor, folder: Path, start: int = 0) -> list[Path]:
    """One PNG per image in [-1, 1]: folder/000000.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, x in enumerate(images.detach().cpu()):
        p = folder / f"{start + i:06d}.png"
        write_image(x.add(1).div(2).clamp(0, 1), p)
        paths.append(p)
    return paths


def plot_losses(metrics_path: Path, out: Path) -> Path | None:
    """From metrics.jsonl: loss_D and loss_G; D(x), D(G(z)) and the sample diversity (samples /
    real images) when logged; FID and KID when the run evaluates (--eval-every). The panels and
    their series are in the PNG's text chunk `layout`."""
    rows = [r for r in read_metrics(metrics_path) if "loss_D" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list, list]:
        kept = [r for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        return [r["step"] for r in kept], [r[key] for r in kept]

    panels = {"losses": {"loss_D": "loss_D", "loss_G": "loss_G"},
              "discriminator outputs": {"D_x": "D(x)", "D_G_z": "D(G(z))",
                                        "diversity": "diversity (samples / real)"},
              "sample quality": {"fid": "FID", "kid": "KID"}}
    panels = {title: {k: label for k, label in keys.items() if series(k)[0]}  # only what was logged
              for title, keys in panels.items()}
    panels = {title: keys for title, keys in panels.items() if keys}
    ylabel = {"losses": "BCE loss", "discriminator outputs": "mean probability, ratio",
              "sample quality": "FID"}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels.items(), strict=True):
        for key, label in keys.items():
            if key == "kid" and "fid" in keys:  # KID is ~1000x smaller than FID: its own axis
                twin = ax.twinx()
                twin.plot(*series(key), "o-", color="tab:red", label=label)
                twin.set_ylabel("KID")
                twin.legend(loc="upper center")
            else:
                ax.plot(*series(key), "o-" if title == "sample quality" else "-", label=label)
        ax.set(xlabel="step", ylabel=ylabel[title] if "fid" in keys or title != "sample quality" else "KID",
               title=title)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    layout = {title: list(keys.values()) for title, keys in panels.items()}
    fig.savefig(buffer, dpi=100, format="png", metadata={"layout": json.dumps(layout),
                                                         "steps": f"{rows[0]['step']}..{rows[-1]['step']}"})
    write_bytes(out, buffer.getvalue())
    plt.close(fig)
    return out
