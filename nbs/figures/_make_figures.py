"""Write the tutorial's diagrams, nbs/figures/*.svg, from this one file.

    .venv/bin/python nbs/figures/_make_figures.py

Each figure is a function below that places boxes, arrows and labels in plain SVG: text stays text
(sans-serif), there are no external references, and one palette and one scale of font sizes serve every
figure. Labels take a small markup for maths: `h_t`, `h_{t-1}`, `W^{\u22a4}` become subscripts and
superscripts. Edit a function, run the file, and commit the script with the SVGs it writes.
(The leading underscore keeps nbdev's docs processing from treating this file as a page.)
"""
import math
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent

# One palette: ink and grey for structure, a colour per kind of quantity.
INK, GREY, LIGHT = "#222222", "#8a8a8a", "#d0d0d0"
INPUT, INPUT_BG = "#1f5fa8", "#e3eefa"  # inputs x_t
STATE, STATE_BG = "#c05800", "#fdebd9"  # hidden states, cells
OUTPUT, OUTPUT_BG = "#1e7a3c", "#e1f3e6"  # outputs, losses, predictions
GATE, GATE_BG = "#6a3d9a", "#efe6f7"  # weights, gates, attention
GRAD = "#c62828"  # gradients, pruned or forbidden moves
# One scale of font sizes. The docs site shows a figure at most ~925 px wide (body and margin column, nbs/styles.css,
# in a 1280 px window): 15-unit text with 12-unit sub- and superscripts in a figure at most 980 units wide shows at
# 11 px or more there. Keep figures at most 980 units wide and no text smaller than SMALL * SUB.
TITLE, BODY, SMALL = 19, 17, 15
FONT = "sans-serif"
SUB = 0.8  # sub- and superscripts, as a share of their text's size


def _markup(s: str, size: float) -> str:
    "Turn `a_b`, `a_{bc}`, `a^b`, `a^{bc}` into tspans shifted down or up; `\\_` is a literal underscore."
    out, i, shift = [], 0, 0.0
    small = round(size * SUB, 1)
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "_^":
            out.append(s[i + 1])
            i += 2
        elif c in "_^" and i + 1 < len(s):
            if s[i + 1] == "{":
                j = s.index("}", i)
                part, i = s[i + 2:j], j + 1
            else:
                part, i = s[i + 1], i + 2
            target = size * (0.3 if c == "_" else -0.42)
            out.append(f'<tspan dy="{target - shift:.1f}" font-size="{small}">{escape(part)}</tspan>')
            shift = target
            if i < len(s) and s[i] in "_^":  # a subscript and a superscript on one symbol: one after the other
                continue
            out.append(f'<tspan dy="{-shift:.1f}">\u200b</tspan>')
            shift = 0.0
        else:
            j = i
            while j < len(s) and s[j] not in "_^\\":
                j += 1
            j = max(j, i + 1)
            out.append(escape(s[i:j]))
            i = j
    return "".join(out)


class Svg:
    "An SVG drawing with arrow markers in each colour."

    def __init__(self, width: int, height: int, title: str):
        self.w, self.h, self.title, self.parts = width, height, title, []
        self.colours = set()

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self, x, y, s, size=BODY, anchor="middle", colour=INK, weight="normal", italic=False):
        style = ' font-style="italic"' if italic else ""
        w = f' font-weight="{weight}"' if weight != "normal" else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{colour}"{w}{style}>'
                 f"{_markup(s, size)}</text>")

    def rect(self, x, y, w, h, fill="white", stroke=INK, rx=6, width=1.5, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" fill="{fill}" '
                 f'stroke="{stroke}" stroke-width="{width}"{d}/>')

    def circle(self, x, y, r, fill="white", stroke=INK, width=1.5, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="{stroke}" '
                 f'stroke-width="{width}"{d}/>')

    def path(self, d, colour=INK, width=1.6, arrow=True, dash=None, fill="none"):
        self.colours.add(colour)
        m = f' marker-end="url(#arrow-{colour[1:]})"' if arrow else ""
        da = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<path d="{d}" fill="{fill}" stroke="{colour}" stroke-width="{width}"{da}{m}/>')

    def line(self, x1, y1, x2, y2, colour=INK, width=1.6, arrow=True, dash=None):
        self.path(f"M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}", colour, width, arrow, dash)

    def node(self, n: "Node", fill, stroke, label, size=BODY, colour=INK, width=1.5, dash=None):
        "Draw a box or circle node with its label centred."
        if n.r:
            self.circle(n.x, n.y, n.r, fill, stroke, width, dash)
        else:
            self.rect(n.x - n.hw, n.y - n.hh, 2 * n.hw, 2 * n.hh, fill, stroke, rx=n.rx, width=width, dash=dash)
        if label:
            self.text(n.x, n.y + size * 0.35, label, size, colour=colour)

    def connect(self, a: "Node", b: "Node", colour=INK, width=1.6, dash=None, gap=2, arrow=True, bend=0.0):
        "An arrow from the edge of `a` to the edge of `b`, straight or bent (bend = sideways offset of the middle)."
        x1, y1 = a.edge(b.x, b.y, gap)
        x2, y2 = b.edge(a.x, a.y, gap + (1 if arrow else 0))
        if bend:
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            dx, dy = x2 - x1, y2 - y1
            n = math.hypot(dx, dy) or 1
            cx, cy = mx - dy / n * bend, my + dx / n * bend
            x1, y1 = a.edge(cx, cy, gap)
            x2, y2 = b.edge(cx, cy, gap + (1 if arrow else 0))
            self.path(f"M{x1:.1f},{y1:.1f} Q{cx:.1f},{cy:.1f} {x2:.1f},{y2:.1f}", colour, width, arrow, dash)
        else:
            self.line(x1, y1, x2, y2, colour, width, arrow, dash)

    def save(self, name: str) -> Path:
        markers = "".join(
            f'<marker id="arrow-{c[1:]}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
            for c in sorted(self.colours)
        )
        body = "\n".join(self.parts)
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.w} {self.h}" width="{self.w}" '
            f'height="{self.h}" font-family="{FONT}" role="img">\n<title>{escape(self.title)}</title>\n'
            f"<defs>{markers}</defs>\n"
            f'<rect x="0" y="0" width="{self.w}" height="{self.h}" fill="white"/>\n{body}\n</svg>\n'
        )
        path = HERE / name
        path.write_text(svg, encoding="utf-8")
        return path


class Node:
    "A box (half-width hw, half-height hh) or a circle (radius r) centred on (x, y)."

    def __init__(self, x, y, hw=0, hh=0, r=0, rx=6):
        self.x, self.y, self.hw, self.hh, self.r, self.rx = x, y, hw, hh, r, rx

    def edge(self, tx, ty, gap=0):
        "The point where the line from the centre towards (tx, ty) leaves the node, `gap` further out."
        dx, dy = tx - self.x, ty - self.y
        d = math.hypot(dx, dy) or 1
        if self.r:
            k = (self.r + gap) / d
        else:
            k = min(self.hw / abs(dx) if dx else math.inf, self.hh / abs(dy) if dy else math.inf) + gap / d
        return self.x + dx * k, self.y + dy * k


def box(x, y, w, h, rx=6):
    return Node(x, y, hw=w / 2, hh=h / 2, rx=rx)


def dot(x, y, r):
    return Node(x, y, r=r)


# ---- the figures --------------------------------------------------------------------------------------------

def rnn_unrolled():
    s = Svg(900, 400, "A recurrent network folded (a cell with a loop) and unrolled over four time steps")
    s.text(450, 28, "h_t = \u03c6(x_t W_{xh} + h_{t\u22121} W_{hh} + b)", TITLE)
    # Folded.
    cell, x, h = box(110, 190, 90, 60), dot(110, 310, 24), dot(110, 75, 24)
    s.node(cell, STATE_BG, STATE, "RNN cell")
    s.node(x, INPUT_BG, INPUT, "x_t")
    s.node(h, STATE_BG, STATE, "h_t")
    s.connect(x, cell)
    s.connect(cell, h)
    s.path("M155,175 C215,175 215,130 180,118 C150,108 128,125 128,156", STATE, 1.8)
    s.text(215, 112, "h_{t\u22121}", SMALL, colour=STATE)
    s.text(110, 360, "folded", SMALL, colour=GREY)
    s.text(234, 200, "=", 28, colour=GREY)
    # Unrolled.
    xs = [390, 530, 670, 810]
    h0 = dot(276, 190, 22)
    s.node(h0, "white", STATE, "h_0", dash="4 3")
    prev = h0
    for t, cx in enumerate(xs, 1):
        c, xi, hi = box(cx, 190, 76, 56), dot(cx, 310, 24), dot(cx, 75, 24)
        s.node(c, STATE_BG, STATE, "cell")
        s.node(xi, INPUT_BG, INPUT, f"x_{t}")
        s.node(hi, STATE_BG, STATE, f"h_{t}")
        s.connect(xi, c)
        s.connect(c, hi)
        s.connect(prev, c, STATE, 1.8)
        s.text(cx - 10, 262, "W_{xh}", SMALL, colour=GATE, anchor="end")
        ax = (prev.x + (prev.hw or prev.r) + cx - 38) / 2
        s.text(ax, 180, "W_{hh}", SMALL, colour=GATE)
        if t > 1:
            s.text(ax, 212, f"h_{t - 1}", SMALL, colour=STATE)
        prev = c
    s.text(560, 360, "unrolled over t = 1 \u2026 4: one copy of the cell per step", SMALL, colour=GREY)
    s.text(450, 388, "the same weights at every step:  W_{xh} = kernel,  W_{hh} = recurrent\\_kernel,  b = bias",
           SMALL, colour=GATE)
    return s.save("rnn_unrolled.svg")


def _pattern(s, x0, y0, n, ins, outs, fed=(), enc=0):
    "One input-output pattern: a row of `n` cells, inputs below at `ins`, outputs above at `outs`."
    dx = 56
    cells = []
    for k in range(n):
        c = box(x0 + k * dx, y0, 34, 30, rx=5)
        cells.append(c)
        s.node(c, STATE_BG if k >= enc else GATE_BG, STATE if k >= enc else GATE, "")
        if k:
            s.connect(cells[k - 1], c, STATE, 1.5)
    for k in list(ins) + list(fed):
        xi = box(cells[k].x, y0 + 58, 26, 22, rx=3)
        if k in fed:
            s.node(xi, OUTPUT_BG, OUTPUT, "", dash="3 2")
        else:
            s.node(xi, INPUT_BG, INPUT, "")
        s.connect(xi, cells[k], OUTPUT if k in fed else INPUT, 1.4)
    for k in outs:
        yo = box(cells[k].x, y0 - 58, 26, 22, rx=3)
        s.node(yo, OUTPUT_BG, OUTPUT, "")
        s.connect(cells[k], yo, OUTPUT, 1.4)
    return cells


def io_patterns():
    s = Svg(960, 640, "Input and output patterns of recurrent networks, with the chapters that build them")
    heads = [
        (20, 40, "one to many", "generation: a prefix \u2192 text", "chapter 07"),
        (340, 40, "many to one", "classification: message \u2192 spam?", "chapter 08; forecasting, chapter 11"),
        (660, 40, "many to many, aligned", "tagging: a class per character", "chapter 09"),
    ]
    for x, y, name, ex, ch in heads:
        s.rect(x, y, 280, 270, "white", LIGHT, rx=10)
        s.text(x + 140, y + 26, name, BODY, weight="bold")
        s.text(x + 140, y + 230, ex, SMALL)
        s.text(x + 140, y + 253, ch, SMALL, colour=GREY)
    _pattern(s, 76, 175, 4, ins=[0], outs=[0, 1, 2, 3], fed=[1, 2, 3])
    _pattern(s, 396, 175, 4, ins=[0, 1, 2, 3], outs=[3])
    _pattern(s, 716, 175, 4, ins=[0, 1, 2, 3], outs=[0, 1, 2, 3])
    # Encoder-decoder.
    s.rect(20, 330, 580, 290, "white", LIGHT, rx=10)
    s.text(310, 356, "many to many, unaligned: encoder \u2192 decoder", BODY, weight="bold")
    _pattern(s, 80, 465, 8, ins=[0, 1, 2, 3], outs=[4, 5, 6, 7], fed=[4, 5, 6, 7], enc=4)
    s.text(164, 560, "the encoder reads the source", SMALL, colour=GATE)
    s.text(444, 560, "the decoder writes the target", SMALL, colour=STATE)
    s.line(304, 420, 304, 540, GREY, 1, arrow=False, dash="4 3")
    s.text(310, 584, "translation: \u201c3 Mar 2021\u201d \u2192 \u201c2021-03-03\u201d (lengths differ)", SMALL)
    s.text(310, 606, "chapter 10", SMALL, colour=GREY)
    # CTC.
    s.rect(620, 330, 320, 290, "white", LIGHT, rx=10)
    s.text(780, 356, "many to many, unaligned: CTC", BODY, weight="bold")
    cells = _pattern(s, 668, 465, 5, ins=[0, 1, 2, 3, 4], outs=[0, 1, 2, 3, 4])
    for c, sym in zip(cells, ["3", "3", "\u2205", "1", "\u2205"]):
        s.text(c.x, 407 + 0.35 * SMALL, sym, SMALL, colour=OUTPUT, weight="bold")
    s.text(780, 385, "collapse: 3 3 \u2205 1 \u2205 \u2192 31", SMALL, colour=OUTPUT)
    s.text(780, 584, "speech: audio frames \u2192 digits", SMALL)
    s.text(780, 606, "a digit or blank \u2205 per step; chapter 12", SMALL, colour=GREY)
    # Legend.
    items = [(INPUT_BG, INPUT, None, "input"), (STATE_BG, STATE, None, "recurrent state"),
             (GATE_BG, GATE, None, "encoder state"), (OUTPUT_BG, OUTPUT, None, "output"),
             (OUTPUT_BG, OUTPUT, "3 2", "previous output fed back as input")]
    lx = 60
    for fill, stroke, dash, text in items:
        s.rect(lx, 12, 16, 14, fill, stroke, rx=3, dash=dash)
        s.text(lx + 22, 24, text, SMALL, anchor="start")
        lx += 40 + 7.2 * len(text)
    return s.save("io_patterns.svg")


def stacked_bidirectional():
    s = Svg(960, 430, "A two-layer stacked RNN and a bidirectional RNN")
    s.text(230, 28, "stacked, 2 layers", TITLE, weight="bold")
    s.text(715, 28, "bidirectional (merge\\_mode=\"concat\")", TITLE, weight="bold")
    xs = [80, 180, 280, 380]
    below = []
    for t, cx in enumerate(xs, 1):
        xi = dot(cx, 380, 20)
        s.node(xi, INPUT_BG, INPUT, f"x_{t}", SMALL)
        below.append(xi)
    for layer, y in ((1, 280), (2, 170)):
        row = []
        for k, cx in enumerate(xs):
            c = box(cx, y, 62, 44)
            s.node(c, STATE_BG, STATE, f"h^{{({layer})}}_{k + 1}", SMALL)
            s.connect(below[k], c, INPUT if layer == 1 else STATE)
            if row:
                s.connect(row[-1], c, STATE, 1.8)
            row.append(c)
        s.text(20, y - 28, f"layer {layer}", SMALL, anchor="start", colour=GREY)
        below = row
    for k, cx in enumerate(xs):
        yo = dot(cx, 70, 20)
        s.node(yo, OUTPUT_BG, OUTPUT, f"y_{k + 1}", SMALL)
        s.connect(below[k], yo, OUTPUT)
    s.text(230, 420, "the states of layer 1 are the inputs of layer 2", SMALL, colour=GREY)
    s.line(470, 50, 470, 410, LIGHT, 1, arrow=False)
    # Bidirectional.
    xs = [565, 665, 765, 865]
    fwd, bwd = [], []
    for k, cx in enumerate(xs):
        xi = dot(cx, 380, 20)
        s.node(xi, INPUT_BG, INPUT, f"x_{k + 1}", SMALL)
        f, b = box(cx, 290, 62, 40), box(cx, 205, 62, 40)
        s.node(f, STATE_BG, STATE, f"h^{{fw}}_{k + 1}", SMALL)
        s.node(b, GATE_BG, GATE, f"h^{{bw}}_{k + 1}", SMALL)
        s.connect(xi, f, INPUT)
        s.path(f"M{cx - 8:.1f},{360:.1f} C{cx - 45:.1f},{330:.1f} {cx - 45:.1f},{250:.1f} {cx - 31:.1f},{222:.1f}",
               INPUT, 1.4)
        o = box(cx, 85, 94, 36)
        s.node(o, OUTPUT_BG, OUTPUT, f"[h^{{fw}}_{k + 1}; h^{{bw}}_{k + 1}]", SMALL)
        s.path(f"M{cx + 20:.1f},{270:.1f} C{cx + 48:.1f},{240:.1f} {cx + 48:.1f},{140:.1f} {cx + 12:.1f},{105:.1f}",
               STATE, 1.4)
        s.connect(b, o, GATE, 1.4)
        fwd.append(f)
        bwd.append(b)
    for k in range(3):
        s.connect(fwd[k], fwd[k + 1], STATE, 1.8)
        s.connect(bwd[k + 1], bwd[k], GATE, 1.8)
    s.text(505, 296, "forward", SMALL, anchor="end", colour=STATE)
    s.text(505, 211, "backward", SMALL, anchor="end", colour=GATE)
    s.text(715, 420, "each output sees the whole sequence; the two halves are concatenated", SMALL, colour=GREY)
    return s.save("stacked_bidirectional.svg")


def bptt_graph():
    s = Svg(980, 610, "Backpropagation through time: the two paths by which the gradient reaches h_t")
    cols = {"t\u22121": 150, "t": 450, "t+1": 750}
    rows = {"L": 60, "y": 150, "h": 255, "a": 375, "x": 470}
    nodes = {}
    for c, cx in cols.items():
        n = nodes[c] = {
            "x": dot(cx, rows["x"], 24), "a": dot(cx, rows["a"], 24), "h": dot(cx, rows["h"], 24),
            "y": dot(cx, rows["y"], 24), "L": box(cx, rows["L"], 56, 34),
        }
        s.node(n["x"], INPUT_BG, INPUT, f"x_{{{c}}}", SMALL)
        s.node(n["a"], "white", STATE, f"a_{{{c}}}", SMALL)
        s.node(n["h"], STATE_BG, STATE, f"h_{{{c}}}", SMALL)
        s.node(n["y"], OUTPUT_BG, OUTPUT, f"\u0177_{{{c}}}", SMALL)
        s.node(n["L"], OUTPUT_BG, OUTPUT, f"L_{{{c}}}", SMALL)
        for a, b in (("x", "a"), ("a", "h"), ("h", "y"), ("y", "L")):
            s.connect(n[a], n[b])
        # The labels of the last column go on its right, clear of the gradient path into h_t.
        lx, side = (cx + 30, "start") if c == "t+1" else (cx - 30, "end")
        s.text(lx, (rows["x"] + rows["a"]) / 2 + 5, "W_{xh}", SMALL, anchor=side, colour=GATE)
        s.text(lx, (rows["a"] + rows["h"]) / 2 + 30, "\u03c6", SMALL, anchor=side, colour=GATE)
        s.text(lx, (rows["h"] + rows["y"]) / 2 + 5, "W_{hy}", SMALL, anchor=side, colour=GATE)
    for a, b in (("t\u22121", "t"), ("t", "t+1")):
        s.connect(nodes[a]["h"], nodes[b]["a"], STATE, 1.8)
        s.text((cols[a] + cols[b]) / 2 + 10, (rows["h"] + rows["a"]) / 2 + 30, "W_{hh}", SMALL, colour=GATE)
    s.line(40, rows["h"] + 20, cols["t\u22121"] - 26, rows["a"] - 8, STATE, 1.4, dash="4 3")
    s.line(cols["t+1"] + 26, rows["h"] + 8, 930, rows["a"] - 30, STATE, 1.4, dash="4 3")
    # The two gradient paths into h_t.
    n, nn, p = nodes["t"], nodes["t+1"], nodes["t\u22121"]
    s.path(f"M{n['y'].x + 30:.1f},{n['y'].y + 14:.1f} L{n['h'].x + 30:.1f},{n['h'].y - 14:.1f}", GRAD, 2.4)
    s.text(n["y"].x + 40, (rows["y"] + rows["h"]) / 2, "\u2460 \u03b4\u0177_t W_{hy}^{\u22a4}", BODY,
           anchor="start", colour=GRAD, weight="bold")

    def back(a, h, colour_width, dash=None):
        sx, sy = a.x - 16, a.y - 18
        ex, ey = h.x + 26, h.y + 4
        s.path(f"M{sx:.1f},{sy:.1f} Q{(sx + ex) / 2 + 20:.1f},{h.y - 20:.1f} {ex:.1f},{ey:.1f}", GRAD, colour_width,
               dash=dash)

    back(nn["a"], n["h"], 2.4)
    s.text(660, 222, "\u2461 \u03b4a_{t+1} W_{hh}^{\u22a4}", BODY, colour=GRAD, weight="bold")
    back(n["a"], p["h"], 1.4, dash="5 4")
    s.text(312, 232, "\u03b4a_t W_{hh}^{\u22a4}: on to h_{t\u22121}", SMALL, colour=GRAD)
    s.path(f"M{n['h'].x + 12:.1f},{n['h'].y + 30:.1f} L{n['a'].x + 12:.1f},{n['a'].y - 30:.1f}", GRAD, 1.4,
           dash="5 4")
    s.text(n["a"].x + 22, rows["a"] - 45, "\u03b4a_t", SMALL, anchor="start", colour=GRAD)
    # The sum.
    s.rect(30, 505, 760, 92, "white", GRAD, rx=8, width=1.2)
    s.text(410, 532, "\u03b4h_t = \u03b4\u0177_t W_{hy}^{\u22a4} + \u03b4a_{t+1} W_{hh}^{\u22a4}", TITLE,
           colour=GRAD, weight="bold")
    s.text(410, 560, "\u2460 from the loss at step t, through the output layer: dhs[:, t];   "
           "\u2461 from step t+1, through the recurrence: dh\\_next", SMALL, colour=GRAD)
    s.text(410, 582, "then \u03b4a_t = \u03b4h_t \u2299 \u03c6\u2032(a_t), and \u03b4a_t W_{hh}^{\u22a4} "
           "is the dh\\_next of step t\u22121", SMALL, colour=GRAD)
    s.line(820, 530, 860, 530, INK, 1.6)
    s.text(870, 535, "forward", SMALL, anchor="start", colour=INK)
    s.line(820, 560, 860, 560, GRAD, 2.2)
    s.text(870, 565, "backward", SMALL, anchor="start", colour=GRAD)
    s.text(20, 30, "L = \u03a3_t L_t", BODY, anchor="start", colour=OUTPUT)
    return s.save("bptt_graph.svg")


def _stage(s, x, y, w, h, number, text):
    s.rect(x, y, w, h, "none", GREY, rx=10, width=1.1, dash="5 4")
    s.circle(x + 14, y + 14, 11, "white", GREY, 1.1)
    s.text(x + 14, y + 18.5, str(number), SMALL, colour=INK, weight="bold")
    s.text(x + 30, y + 19, text, SMALL, anchor="start", colour=GREY)


def _bus(s, lines, y=455, x0=150, x1=900):
    "The box at the bottom of a cell diagram: the one input product and one recurrent product of every gate."
    h = 20 + 23 * len(lines)
    s.rect(x0, y - h / 2, x1 - x0, h, GATE_BG, GATE, rx=8, width=1.3)
    for k, text in enumerate(lines):
        s.text((x0 + x1) / 2, y - h / 2 + 28 + 23 * k, text, SMALL, colour=GATE)
    s.path(f"M70,{y} L{x0 - 2},{y}", STATE, 1.8)
    s.text(30, y + 5, "h_{t\u22121}", BODY, anchor="start", colour=STATE)
    xin = dot(100, 540, 20)
    s.node(xin, INPUT_BG, INPUT, "x_t", SMALL)
    s.path(f"M{xin.x + 20},{xin.y} L{x0 + 30},{xin.y} L{x0 + 30},{y + h / 2 + 2}", INPUT, 1.6)
    return y - h / 2


def lstm_cell():
    s = Svg(980, 580, "The LSTM cell built up gate by gate: forget, input and candidate, cell update, output")
    top = 110
    s.text(490, 24, "LSTM: the cell c_t is updated by addition; going back one step multiplies its gradient by f_t",
           BODY, colour=INK)
    bus = _bus(s, ["z_t = x_t W + h_{t\u22121} U + b = [z^i_t, z^f_t, z^c_t, z^o_t]",
                   "W = kernel (D, 4H),  U = recurrent\\_kernel (H, 4H),  b = bias (4H,);  Keras order i, f, c, o"])
    s.text(30, top + 5, "c_{t\u22121}", BODY, anchor="start", colour=STATE)
    _stage(s, 120, 60, 150, 350, 1, "forget")
    _stage(s, 285, 60, 250, 350, 2, "input + candidate")
    _stage(s, 550, 60, 140, 350, 3, "cell update")
    _stage(s, 705, 60, 175, 350, 4, "output")
    gates = {}
    for name, gx, fn in (("f", 195, "\u03c3"), ("i", 340, "\u03c3"), ("c", 470, "tanh"), ("o", 760, "\u03c3")):
        g = box(gx, 320, 64 if fn == "tanh" else 44, 36)
        s.node(g, GATE_BG, GATE, fn, BODY if fn != "tanh" else SMALL)
        s.line(gx, bus - 2, gx, 340, GATE, 1.6)
        s.text(gx + 8, 372, f"z^{name}_t", SMALL, anchor="start", colour=GATE)
        gates[name] = g
    mul_f, add, mul_i = dot(195, top, 15), dot(620, top, 15), dot(405, 200, 15)
    s.line(80, top, mul_f.x - 16, top, STATE, 2.2)
    s.connect(mul_f, add, STATE, 2.2)
    for node, sym in ((mul_f, "\u00d7"), (add, "+"), (mul_i, "\u00d7")):
        s.node(node, "white", STATE, sym, BODY)
    g = gates["f"]
    s.line(g.x, g.y - 18, g.x, top + 16, GATE, 1.6)
    s.text(g.x + 8, 230, "f_t", BODY, anchor="start", colour=GATE)
    gi, gg = gates["i"], gates["c"]
    s.path(f"M{gi.x},{gi.y - 18} L{gi.x},200 L{mul_i.x - 17},200", GATE, 1.6)
    s.path(f"M{gg.x},{gg.y - 18} L{gg.x},200 L{mul_i.x + 17},200", GATE, 1.6)
    s.text(gi.x - 8, 260, "i_t", BODY, anchor="end", colour=GATE)
    s.text(gg.x + 8, 260, "g_t", BODY, anchor="start", colour=GATE)
    s.path(f"M{mul_i.x},{mul_i.y - 16} L{mul_i.x},150 L{add.x},150 L{add.x},{add.y + 17}", STATE, 1.6)
    s.text(mul_i.x + 10, 142, "i_t \u2299 g_t", SMALL, anchor="start", colour=STATE)
    tanh_c = box(820, 200, 58, 30)
    s.node(tanh_c, STATE_BG, STATE, "tanh", SMALL)
    mul_o = dot(820, 270, 15)
    s.node(mul_o, "white", STATE, "\u00d7", BODY)
    s.line(add.x + 16, top, 930, top, STATE, 2.2)
    s.path(f"M820,{top} L820,{tanh_c.y - 16}", STATE, 1.6)
    s.connect(tanh_c, mul_o, STATE)
    go = gates["o"]
    s.path(f"M{go.x},{go.y - 18} L{go.x},270 L{mul_o.x - 17},270", GATE, 1.6)
    s.text(go.x - 8, 262, "o_t", BODY, anchor="end", colour=GATE)
    s.path(f"M{mul_o.x},{mul_o.y + 16} L{mul_o.x},330 L930,330", STATE, 2.2)
    s.text(940, top + 5, "c_t", BODY, anchor="start", colour=STATE)
    s.text(940, 335, "h_t", BODY, anchor="start", colour=STATE)
    eqs = [(195, "f_t = \u03c3(z^f_t)"), (410, "i_t = \u03c3(z^i_t),  g_t = tanh(z^c_t)"),
           (620, "c_t = f_t \u2299 c_{t\u22121} + i_t \u2299 g_t"), (792, "h_t = o_t \u2299 tanh(c_t)")]
    for x, e in eqs:
        s.text(x, 52, e, SMALL, colour=INK)
    return s.save("lstm_cell.svg")


def gru_cell():
    s = Svg(980, 580, "The GRU cell (reset_after=True) built up gate by gate: update, reset, candidate, new state")
    top = 110
    s.text(490, 24, "GRU, reset\\_after=True: the reset gate scales the recurrent product; z_t keeps the old state",
           BODY, colour=INK)
    bus = _bus(s, ["[x^z_t, x^r_t, x^h_t] = x_t W + b_{in},    [u^z_t, u^r_t, u^h_t] = h_{t\u22121} U + b_{rec}",
                   "W = kernel (D, 3H),  U = recurrent\\_kernel (H, 3H),  bias (2, 3H): rows b_{in}, b_{rec}"])
    s.text(30, top + 5, "h_{t\u22121}", BODY, anchor="start", colour=STATE)
    _stage(s, 120, 60, 140, 350, 1, "update gate")
    _stage(s, 275, 60, 140, 350, 2, "reset gate")
    _stage(s, 430, 60, 250, 350, 3, "candidate")
    _stage(s, 695, 60, 185, 350, 4, "new state")
    z, r = box(190, 320, 44, 36), box(345, 320, 44, 36)
    for g, name in ((z, "z"), (r, "r")):
        s.node(g, GATE_BG, GATE, "\u03c3", BODY)
        s.line(g.x, bus - 2, g.x, 340, GATE, 1.6)
        s.text(g.x + 8, 372, f"x^{name}_t + u^{name}_t", SMALL, anchor="start", colour=GATE)
    # Candidate: the reset gate multiplies u^h, after the recurrent product.
    mul_r, plus_x, tanh_h = dot(520, 290, 15), dot(520, 235, 15), box(520, 180, 58, 30)
    s.node(mul_r, "white", STATE, "\u00d7", BODY)
    s.node(plus_x, "white", STATE, "+", BODY)
    s.node(tanh_h, GATE_BG, GATE, "tanh", SMALL)
    s.line(520, bus - 2, 520, mul_r.y + 17, STATE, 1.6)
    s.text(528, 372, "u^h_t", SMALL, anchor="start", colour=STATE)
    s.path(f"M620,{bus - 2} L620,235 L{plus_x.x + 17},235", INPUT, 1.6)
    s.text(628, 372, "x^h_t", SMALL, anchor="start", colour=INPUT)
    s.path(f"M{r.x},{r.y - 18} L{r.x},290 L{mul_r.x - 17},290", GATE, 1.6)
    s.text(r.x + 8, 282, "r_t", BODY, anchor="start", colour=GATE)
    s.connect(mul_r, plus_x, STATE)
    s.connect(plus_x, tanh_h, STATE)
    s.text(540, 214, "r_t \u2299 u^h_t + x^h_t", SMALL, anchor="start", colour=STATE)
    # New state.
    mul_z, add, mul_1z = dot(190, top, 15), dot(800, top, 15), dot(800, 250, 15)
    s.line(80, top, mul_z.x - 16, top, STATE, 2.2)
    s.connect(mul_z, add, STATE, 2.2)
    for nd, sym in ((mul_z, "\u00d7"), (add, "+"), (mul_1z, "\u00d7")):
        s.node(nd, "white", STATE, sym, BODY)
    s.line(z.x, z.y - 18, z.x, top + 16, GATE, 1.6)
    s.text(z.x + 8, 230, "z_t", BODY, anchor="start", colour=GATE)
    one_minus = box(740, 200, 58, 28)
    s.node(one_minus, GATE_BG, GATE, "1 \u2212 z_t", SMALL)
    s.path(f"M{z.x},140 L740,140 L740,{one_minus.y - 16}", GATE, 1.4)
    s.circle(z.x, 140, 3, GATE, GATE, 1)
    s.path(f"M740,{one_minus.y + 14} L740,250 L{mul_1z.x - 17},250", GATE, 1.4)
    s.path(f"M{tanh_h.x + 30},180 L700,180 L700,300 L800,300 L800,{mul_1z.y + 17}", STATE, 1.6)
    s.text(640, 172, "h\u0303_t", BODY, colour=STATE)
    s.connect(mul_1z, add, STATE)
    s.line(add.x + 16, top, 940, top, STATE, 2.2)
    s.text(945, top + 5, "h_t", BODY, anchor="start", colour=STATE)
    eqs = [(190, "z_t = \u03c3(x^z_t + u^z_t)"), (345, "r_t = \u03c3(x^r_t + u^r_t)"),
           (555, "h\u0303_t = tanh(x^h_t + r_t \u2299 u^h_t)"),
           (800, "h_t = z_t \u2299 h_{t\u22121} + (1 \u2212 z_t) \u2299 h\u0303_t")]
    for x, e in eqs:
        s.text(x, 52, e, SMALL, colour=INK)
    return s.save("gru_cell.svg")


def seq2seq_attention():
    s = Svg(980, 560, "Encoder-decoder with Luong attention: scores, softmax weights and the context vector")
    src = ["0", "3", "/", "0", "4", "/", "2", "1"]
    weights = [0.02, 0.01, 0.02, 0.01, 0.02, 0.05, 0.62, 0.25]
    enc = []
    for j, (ch, w) in enumerate(zip(src, weights)):
        cx = 60 + j * 62
        xi = box(cx, 510, 30, 28, rx=4)
        s.node(xi, INPUT_BG, INPUT, ch, BODY)
        h = box(cx, 430, 46, 36)
        s.node(h, GATE_BG, GATE, f"h_{j + 1}", SMALL)
        s.connect(xi, h, INPUT)
        if enc:
            s.connect(enc[-1], h, GATE, 1.6)
        enc.append(h)
        bh = 60 * w / max(weights)
        s.line(cx, 380, cx, h.y - 19, LIGHT, 1, arrow=False)
        s.rect(cx - 14, 380 - bh, 28, bh, OUTPUT_BG, OUTPUT, rx=2, width=1.2)
        s.text(cx, 376 - bh, f"{w:.2f}", SMALL - 1.5, colour=OUTPUT)
    s.text(20, 545, "source: \u201c03/04/21\u201d (encoder GRU states h_j)", SMALL, anchor="start", colour=INPUT)
    s.text(530, 372, "\u03b1_{3j}", BODY, anchor="start", colour=OUTPUT, weight="bold")
    dec_in, dec_out = ["<s>", "2", "0"], ["2", "0"]
    dec = []
    for t in range(3):
        cx = 720 + t * 90
        xi = box(cx, 510, 40, 28, rx=4)
        s.node(xi, INPUT_BG, INPUT, dec_in[t], SMALL)
        st = box(cx, 430, 46, 36)
        s.node(st, STATE_BG, STATE, f"s_{t + 1}", SMALL)
        s.connect(xi, st, INPUT)
        if dec:
            s.connect(dec[-1], st, STATE, 1.6)
        dec.append(st)
    for t, ch in enumerate(dec_out):
        s.text(dec[t].x, 395, f"\u2192 \u201c{ch}\u201d", SMALL, colour=GREY)
    s.path(f"M{enc[-1].x + 24},{enc[-1].y + 8} C 620,470 640,470 {dec[0].x - 24},{dec[0].y + 8}", GATE, 1.6,
           dash="5 4")
    s.text(610, 492, "h_S starts the decoder", SMALL, colour=GATE)
    s.text(960, 545, "decoder input: the previous character", SMALL, anchor="end", colour=INPUT)
    st = dec[2]
    score = box(700, 260, 200, 36)
    s.node(score, "white", GATE, "e_{3j} = s_3^{\u22a4} W_a h_j", SMALL)
    s.path(f"M{st.x - 10},{st.y - 19} L{st.x - 10},260 L{score.x + 102},260", STATE, 1.6)
    soft = box(390, 260, 300, 36)
    s.node(soft, "white", OUTPUT, "\u03b1_{3j} = exp e_{3j} / \u03a3_k exp e_{3k}", SMALL)
    s.connect(score, soft, GATE)
    s.line(300, soft.y + 19, 300, 352, OUTPUT, 1.4)
    ctx = box(390, 160, 200, 36)
    s.node(ctx, OUTPUT_BG, OUTPUT, "c_3 = \u03a3_j \u03b1_{3j} h_j", SMALL)
    s.connect(soft, ctx, OUTPUT)
    s.text(400, 215, "weighted sum of the h_j", SMALL, anchor="start", colour=OUTPUT)
    comb = box(720, 160, 220, 36)
    s.node(comb, STATE_BG, STATE, "s\u0303_3 = tanh(W_c [s_3; c_3])", SMALL)
    s.connect(ctx, comb, OUTPUT)
    s.path(f"M{st.x + 14},{st.y - 19} L{st.x + 14},160 L{comb.x + 112},160", STATE, 1.4)
    out = box(720, 70, 180, 36)
    s.node(out, OUTPUT_BG, OUTPUT, "softmax \u2192 \u201c2\u201d", SMALL)
    s.connect(comb, out, STATE)
    s.text(20, 28, "Output step t = 3 of \u201c2021-04-03\u201d: the weights fall on the year \u201c21\u201d", BODY,
           anchor="start")
    s.text(20, 50, "the softmax runs over the real source characters only (padding is masked)", SMALL,
           anchor="start", colour=GREY)
    return s.save("seq2seq_attention.svg")


def beam_search_tree():
    s = Svg(980, 520, "Beam search of width 2 over 3 steps, against greedy decoding")
    logp = {"a": -0.51, "b": -0.92, "aa": -0.60, "ab": -0.80, "ba": -0.11, "bb": -2.30,
            "aaa": -0.51, "aab": -0.92, "baa": -0.11, "bab": -2.30}
    total = {"": 0.0}
    for p in sorted(logp, key=len):
        total[p] = total[p[:-1]] + logp[p]
    kept = {"a", "b", "aa", "ba", "aaa", "baa"}
    greedy = {"a", "aa", "aaa"}
    best = "baa"
    ys = {"": 260, "a": 150, "b": 370, "aa": 90, "ab": 210, "ba": 310, "bb": 430,
          "aaa": 60, "aab": 130, "baa": 290, "bab": 360}
    xs = {0: 70, 1: 300, 2: 540, 3: 790}
    nodes = {p: box(xs[len(p)], ys[p], 110, 46, rx=8) for p in ys}
    for p in logp:
        parent, n = nodes[p[:-1]], nodes[p]
        on_beam = p in kept
        colour = OUTPUT if best.startswith(p) else (STATE if on_beam else GREY)
        width = 2.6 if best.startswith(p) else (1.8 if on_beam else 1.2)
        s.connect(parent, n, colour, width, dash=None if on_beam else "5 4")
        x1, x2 = parent.x + parent.hw, n.x - n.hw
        slope = abs(n.y - parent.y) / (x2 - x1)
        off = -8 - slope * 38 if n.y <= parent.y else 18 + slope * 38
        s.text((x1 + x2) / 2, (parent.y + n.y) / 2 + off, f"{p[-1]}: {minus(logp[p])}", SMALL, colour=colour)
    for p, n in nodes.items():
        if not p:
            s.node(n, "white", INK, "start", BODY)
            continue
        on_beam = p in kept
        if p in greedy:
            s.rect(n.x - n.hw - 5, n.y - n.hh - 5, 2 * n.hw + 10, 2 * n.hh + 10, "none", GATE, rx=11, width=1.4,
                   dash="3 3")
        fill = OUTPUT_BG if p == best else (STATE_BG if on_beam else "white")
        stroke = OUTPUT if p == best else (STATE if on_beam else GREY)
        s.node(n, fill, stroke, "", width=2.4 if p == best else 1.5, dash=None if on_beam else "5 4")
        s.text(n.x, n.y - 3, f"\u201c{p}\u201d", BODY, colour=INK if on_beam else GREY, weight="bold")
        s.text(n.x, n.y + 15, minus(total[p]), SMALL, colour=INK if on_beam else GREY)
        if not on_beam:
            s.text(n.x + 66, n.y + 5, "pruned", SMALL, anchor="start", colour=GRAD)
    for k, x in xs.items():
        if k:
            s.text(x, 478, f"step {k}", SMALL, colour=GREY)
    s.text(490, 24, "Beam width 2: keep the 2 best prefixes by total log-probability at each step", BODY)
    s.text(20, 505, "edge: token: log p(token | prefix);  box: total log-probability;  dashed: pruned", SMALL,
           anchor="start", colour=GREY)
    s.text(960, 505, "greedy (purple outline): \u201caaa\u201d, \u22121.62;  beam: \u201cbaa\u201d, \u22121.14",
           SMALL, anchor="end", colour=GATE, weight="bold")
    return s.save("beam_search_tree.svg")


def minus(v: float) -> str:
    "A number with a true minus sign."
    return f"{v:.2f}".replace("-", "\u2212")


def ctc_lattice():
    blank = "\u2205"
    label = ["3", "1", "1"]
    ext = [blank]
    for c in label:
        ext += [c, blank]
    T, S = 6, len(ext)
    s = Svg(980, 470, "The CTC alignment lattice of the label 311: extended label as rows, time as columns")
    x0, dx, y0, dy = 150, 78, 95, 56

    def pos(t, k):  # t and k count from 1, as in the chapter
        return x0 + (t - 1) * dx, y0 + (k - 1) * dy

    def moves(k):  # the positions a path can come from into position k: stay, next, and skip where allowed
        src = [k, k - 1]
        if k >= 3 and ext[k - 1] != blank and ext[k - 1] != ext[k - 3]:
            src.append(k - 2)
        return [j for j in src if j >= 1]

    fwd = {(1, 1), (1, 2)}
    for t in range(2, T + 1):
        fwd |= {(t, k) for k in range(1, S + 1) if any((t - 1, j) in fwd for j in moves(k))}
    bwd = {(T, S), (T, S - 1)}
    for t in range(T - 1, 0, -1):
        bwd |= {(t, j) for k in range(1, S + 1) if (t + 1, k) in bwd for j in moves(k)}
    alive = fwd & bwd
    focus = (4, 4)
    path = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7)]  # 3 blank 1 blank 1 blank
    for k, sym in enumerate(ext, 1):
        _, y = pos(1, k)
        s.text(30, y + 5, f"s = {k}", SMALL, anchor="start", colour=GREY)
        s.text(100, y + 6, sym, TITLE, colour=OUTPUT if sym != blank else GREY, weight="bold")
    for t in range(1, T + 1):
        x, _ = pos(t, 1)
        s.text(x, y0 - 40, f"t = {t}", SMALL, colour=GREY)
    s.text(100, y0 - 40, "y\u2032_s", SMALL, colour=INK)
    for t in range(2, T + 1):
        for k in range(1, S + 1):
            if (t, k) not in alive:
                continue
            for j in moves(k):
                if (t - 1, j) not in alive:
                    continue
                a, b = dot(*pos(t - 1, j), 13), dot(*pos(t, k), 13)
                on_path = (t - 1, j) in path and (t, k) in path
                colour = STATE if on_path else (GATE if (t, k) == focus else LIGHT)
                s.connect(a, b, colour, 2.6 if on_path else (2.2 if (t, k) == focus else 1.3))
    a, b = dot(*pos(3, 4), 13), dot(*pos(4, 6), 13)
    s.connect(a, b, GRAD, 1.6, dash="4 3", bend=22)
    for t in range(1, T + 1):
        for k in range(1, S + 1):
            n = dot(*pos(t, k), 13)
            if (t, k) == focus:
                s.node(n, GATE_BG, GATE, "", width=2.4)
            elif (t, k) in path:
                s.node(n, STATE_BG, STATE, "", width=2.0)
            elif (t, k) in alive:
                s.node(n, "white", INK, "", width=1.3)
            else:
                s.node(n, "white", LIGHT, "", width=1.0, dash="2 2")
    a, b = dot(*pos(3, 4), 13), dot(*pos(4, 6), 13)
    mx, my = (a.x + b.x) / 2, (a.y + b.y) / 2
    ux, uy = (b.y - a.y) / math.hypot(b.x - a.x, b.y - a.y), -(b.x - a.x) / math.hypot(b.x - a.x, b.y - a.y)
    s.text(mx - ux * 11 + 8, my - uy * 11 + 8, "\u2717", TITLE, colour=GRAD, weight="bold")
    fx, fy = pos(*focus)
    s.text(fx + 16, fy - 14, "\u03b1_4(4)", SMALL, anchor="start", colour=GATE, weight="bold")
    sx, sy = pos(1, 1)
    s.text(sx, sy - 22, "start", SMALL, colour=GREY)
    ex_, ey = pos(T, S)
    s.text(ex_ + 20, ey + 5, "end", SMALL, anchor="start", colour=GREY)
    rx = 600
    lines = [
        (BODY, INK, "bold", "label y = 311 (U = 3)"),
        (SMALL, INK, "normal", "rows: y\u2032 = \u2205 3 \u2205 1 \u2205 1 \u2205,  S = 2U + 1 = 7"),
        (SMALL, INK, "normal", "each step a path stays, moves to the next row, or skips"),
        (SMALL, INK, "normal", "a blank between two different labels"),
        (SMALL, GRAD, "normal", "\u2717 no skip from 1 to 1: it would merge the two 1s"),
        (SMALL, STATE, "normal", "one path: 3 \u2205 1 \u2205 1 \u2205 \u2192 collapses to 311"),
        (SMALL, GREY, "normal", "dashed circles: on no path that spells 311"),
        (None, None, None, ""),
        (BODY, GATE, "bold", "the forward recursion"),
        (SMALL, GATE, "normal", "\u03b1_t(s) = p_t(y\u2032_s) ( \u03b1_{t\u22121}(s) + \u03b1_{t\u22121}(s\u22121)"),
        (SMALL, GATE, "indent", "+ [y\u2032_s \u2260 \u2205, y\u2032_s \u2260 y\u2032_{s\u22122}] "
                                "\u03b1_{t\u22121}(s\u22122) )"),
        (SMALL, GATE, "normal", "purple: stay, next and skip into \u03b1_4(4)"),
        (SMALL, INK, "normal", "start: \u03b1_1(1) = p_1(\u2205),  \u03b1_1(2) = p_1(y_1)"),
        (SMALL, INK, "normal", "end: p(y | x) = \u03b1_T(S) + \u03b1_T(S\u22121)"),
    ]
    y = 80
    for size, colour, weight, text in lines:
        if text:
            indent = 60 if weight == "indent" else 0
            s.text(rx + indent, y, text, size, anchor="start", colour=colour,
                   weight="normal" if weight == "indent" else weight)
        y += 26
    s.text(490, 26, "CTC: every path through the lattice spells the label; \u03b1 sums them column by column", BODY)
    return s.save("ctc_lattice.svg")


FIGURES = [rnn_unrolled, io_patterns, stacked_bidirectional, bptt_graph, lstm_cell, gru_cell, seq2seq_attention,
           beam_search_tree, ctc_lattice]

if __name__ == "__main__":
    for make in FIGURES:
        print(make().relative_to(HERE.parent.parent))
