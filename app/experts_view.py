"""What the experts did: a heat map of the expert each source token went to.

Rows are the encoder's MoE layers, columns the source tokens (SentencePiece
pieces, drawn as text by matplotlib: nothing from the input becomes HTML),
the colour and the number in each cell are the expert index. A table beside
it gives, per layer, the fraction of tokens dropped (they overflowed their
expert's capacity and passed through the residual connection) and how many
experts the sentence used.
"""

import functools

_MAX_LABEL = 12  # characters of a token shown under its column


def _token_label(token: str) -> str:
    # "▁" is SentencePiece's word-start mark; show it as a space-free token.
    label = token.replace("▁", "·") if token != "▁" else "·"
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"


@functools.cache
def _pyplot():
    """matplotlib's pyplot, imported at the first figure: it adds ~0.4 s to the app's start-up."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    from matplotlib import pyplot

    return pyplot


def routing_figure(trace: dict):
    """Heat map figure of `trace` = {"tokens": [T], "layers": {name: [T ints]}}.

    Returns a matplotlib Figure sized to the number of tokens and layers.
    """
    plt = _pyplot()
    tokens = trace["tokens"]
    names = list(trace["layers"])
    experts = [trace["layers"][name] for name in names]  # [layers, tokens]
    num_experts = max((max(row) for row in experts if row), default=0) + 1  # colours: one per expert index
    width = min(max(6, 2.5 + 0.45 * len(tokens)), 30)  # inches: room for the layer names and the title
    height = 1.2 + 0.45 * max(len(names), 1)
    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    if not names or not tokens:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "This model has no MoE layer in its encoder.", ha="center", va="center", parse_math=False)
        return figure
    colormap = plt.get_cmap("tab20" if num_experts > 10 else "tab10", max(num_experts, 2))
    axes.imshow(experts, cmap=colormap, vmin=-0.5, vmax=max(num_experts, 2) - 0.5, aspect="auto")
    for row, layer_experts in enumerate(experts):
        for column, expert in enumerate(layer_experts):
            axes.text(column, row, str(expert), ha="center", va="center", fontsize=8, color="white", parse_math=False)
    axes.set_xticks(range(len(tokens)), [_token_label(token) for token in tokens], rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    for label in [*axes.get_xticklabels(), *axes.get_yticklabels()]:
        label.set_parse_math(False)  # a "$" in a token is text, not mathtext
    axes.set_xlabel("source token")
    used = len({expert for row in experts for expert in row})
    axes.set_title(f"expert chosen per token ({used} distinct expert{'s' if used != 1 else ''} used)", fontsize=10)
    figure.tight_layout()
    plt.close(figure)  # the page renders it; pyplot must not keep it alive
    return figure


def routing_table(trace: dict) -> list[list]:
    """Rows [layer, fraction dropped, experts used / tokens] for a Dataframe."""
    rows = []
    for name, experts in trace["layers"].items():
        dropped = trace["fraction_dropped"].get(name)
        rows.append([name, "n/a" if dropped is None else f"{dropped:.1%}", f"{len(set(experts))} / {len(experts)}"])
    return rows
