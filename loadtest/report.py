"""The load test's outputs: a summary table, the JSON document, a latency CDF plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.0f}"


def _pct(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f} %"


COLUMNS = ("server", "profile", "g2g p50 / p95 / p99 / max (ms)", "transport p50 / p95 / p99 (ms)",
           "frames delivered", "freezes", "frozen", "longest freeze (ms)", "first frame p50 / max (ms)",
           "audio in time", "audio RED / FEC", "video FEC packets / rebuilt (down; up)", "server CPU (of one core)",
           "server RSS (MB)")


def table_row(result: dict[str, Any]) -> list[str]:
    if "error" in result:
        return [result["server"], result["profile"], f"FAILED: {result['error']}"] + [""] * (len(COLUMNS) - 3)
    lat, tr, ff = result["latency_ms"], result["transport_ms"], result["first_frame_ms"]
    return [
        result["server"], result["profile"],
        f"{_ms(lat['p50'])} / {_ms(lat['p95'])} / {_ms(lat['p99'])} / {_ms(lat['max'])}",
        f"{_ms(tr['p50'])} / {_ms(tr['p95'])} / {_ms(tr['p99'])}",
        _pct(result["frames_delivered_ratio"]),
        str(result["freeze_count"]),
        _pct(result["frozen_ratio"]),
        _ms(result["longest_freeze_ms"]),
        f"{_ms(ff['p50'])} / {_ms(ff['max'])}",
        _pct(result["audio_in_time_ratio"]),
        f"{_pct(result.get('audio_red_ratio'))} / {_pct(result.get('audio_fec_ratio'))}",
        f"{_video_fec(result.get('video_fec'))}; {_uplink_fec(result.get('server_media'))}",
        _pct(result["server_cpu_core_share"]),
        _ms(result["server_rss_mb"]),
    ]


def _video_fec(totals: Optional[dict]) -> str:
    if not totals or not totals.get("streams"):
        return "-"
    return f"{totals['fec_packets']} / {totals['fec_recovered']}"


def _uplink_fec(server_media: Optional[dict]) -> str:
    """What publishers' FEC brought to the server (its own counters; ours only)."""
    uplink = (server_media or {}).get("uplink_video")
    if not uplink or not uplink["fec_received"]:
        return "-"
    return f"{uplink['fec_received']} / {uplink['fec_rebuilt']}"


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_row(r)) + " |" for r in results]
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    tmp.replace(path)


def plot_latency_cdf(results: list[dict[str, Any]], samples: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Latency CDF per profile: glass-to-glass (solid) and transport (dashed), as a share of frames sent.

    Frames never delivered are in the denominator, so each curve levels off at
    the delivered share instead of climbing to 1: a profile that loses frames
    cannot look better than one that delivers them late.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    several_servers = len({r["server"] for r in results}) > 1
    xmax = 1000.0
    for i, result in enumerate(r for r in results if "error" not in r):
        label = result["profile"] + (f" ({result['server']})" if several_servers else "")
        s = samples.get(result["key"], {})
        color = colors[i % len(colors)]
        for kind, style, sent in (("latency_s", "-", result["frames_sent_probes"]),
                                  ("transport_s", "--", result["frames_sent"])):
            values = sorted(max(v * 1000, 0.1) for v in s.get(kind, []))
            if not values or not sent:
                continue
            y = [(k + 1) / sent for k in range(len(values))]
            ax.step(values, y, where="post", linestyle=style, color=color,
                    label=f"{label}: {'glass-to-glass' if kind == 'latency_s' else 'transport'}")
            xmax = max(xmax, values[-1])
    ax.axvline(600, color="grey", linewidth=0.8, linestyle=":")
    ax.text(600, 0.02, " 600 ms", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1, xmax * 1.2)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("latency, ms (log): publisher sent -> decoded on a probe receiver (solid) / "
                  "all packets arrived (dashed)", fontsize=8)
    ax.set_ylabel("share of frames sent")
    ax.set_title("Video latency CDF per profile (frames never delivered keep a curve below 1)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
