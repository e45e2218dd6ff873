"""Generator version 2: a street scene sized from real driving data, rendered bit for bit the
same on every x86 machine (docs/design.md 4).

What changed from version 1, and why:

* **Layout and class shares.** Version 1 gave the road a third of its share in Cityscapes, ten
  times the terrain, four times the sky and ten times the buses, trucks and trams. Version 2 draws
  a street canyon: a wide road, sidewalks, building facades on both sides in perspective, street
  trees, parked cars along both curbs, rare large vehicles (docs/design.md 4 lists the target
  shares and the ones reached).
* **Physical sizes.** Every object is sized in metres at its distance (1.7 m person = 0.34 of
  the image height at the bottom row), from published dimensions: traffic sign plates of
  0.6-0.9 m, signal heads of about 0.35 x 1.0 m, poles of 0.12-0.2 m, bicycles of 1.75 m with
  0.7 m wheels, cars of 1.5 m height. Objects come at every distance, so each class has large,
  easy instances and small, hard ones, as in real data: difficulty is a continuum, not two groups.
* **Bicycles labelled as annotators do.** Cityscapes outlines a bicycle with polygons that fill
  its wheels; version 1 labelled 1-2 pixel rings, which no model learnt at any zoom (0 IoU with
  ground-truth boxes). Here the wheels are filled in the label while the image shows thin rims
  and frame with the background seen through.
* **Darkness varies per scene.** Night ambient light is drawn log-uniformly over a 5:1 range and
  street lamps give pools 10-30 times brighter, as between the illuminance classes of road
  lighting standards (EN 13201); lamps, headlights and lit windows glare and over-expose.
* **Exact arithmetic.** Rendering uses nightlab.data.synthetic.exact (no CPU-dispatched float
  kernels), and drawing uses integer rasterisation only, so pixels and PNG bytes are the same
  on any x86 machine (tests/test_synthetic.py pins them and checks with SIMD paths switched off).
"""
from __future__ import annotations

import cv2
import numpy as np

from nightlab.data.synthetic import exact
from nightlab.data.synthetic.common import LABEL_IDS, C, Canvas, Scene, _poly, _rect
from nightlab.data.synthetic.common import _person as _person_mask

PX_PER_M = 0.2  # at scale 1 (the bottom row) one metre is 0.2 image heights: a 1.7 m person is 0.34 h
LN_AMBIENT = (-4.422848629194137, -2.8134107167600364)  # ln 0.012, ln 0.06 (no libm call: exact everywhere)
SIGN_COLOURS = [(0.85, 0.12, 0.10), (0.90, 0.90, 0.88), (0.10, 0.25, 0.70), (0.95, 0.80, 0.10)]


class Canvas2(Canvas):
    """Version 2's canvas: glows drawn without anti-aliasing (integer rasterisation, the same on
    every machine) and a map of retro-reflective surfaces (signs shine in headlights)."""

    def __init__(self, h: int, w: int, rng: np.random.Generator):
        super().__init__(h, w, rng)
        self.reflect = np.zeros((h, w), np.float32)

    def fill(self, cls: str, draw, colour=None, inst: int | None = None, paint=None, reflective: bool = False):
        m = self._scratch
        draw(m)
        x, y, bw, bh = cv2.boundingRect(m)
        box = (slice(y, y + bh), slice(x, x + bw))
        self.reflect[box][m[box] > 0] = 1.0 if reflective else 0.0
        super().fill(cls, lambda msk: None, colour, inst, paint)  # the mask is already drawn

    def _glow_mask(self, draw, rgb, intensity: float) -> None:
        m = self._scratch
        draw(m)
        x, y, bw, bh = cv2.boundingRect(m)
        box = (slice(y, y + bh), slice(x, x + bw))
        sel = m[box] > 0
        m[box] = 0
        self.emissive[box][sel] = np.asarray(rgb, np.float32) * np.float32(intensity)

    def glow_disc(self, x, y, r, rgb, intensity: float = 1.0) -> None:
        self._glow_mask(lambda m: cv2.circle(m, (int(x), int(y)), max(1, int(r)), 1, -1), rgb, intensity)

    def glow_rect(self, x0, y0, x1, y1, rgb, intensity: float = 1.0) -> None:
        self._glow_mask(_rect(x0, y0, x1, y1), rgb, intensity)

    def glow_poly(self, pts, rgb, intensity: float = 1.0) -> None:
        self._glow_mask(_poly(pts), rgb, intensity)


class Street:
    """The perspective of a straight street seen from a car in its middle."""

    def __init__(self, h: int, w: int, rng: np.random.Generator):
        self.h, self.w = h, w
        self.horizon = int(h * rng.uniform(0.33, 0.42))
        self.vx = w * rng.uniform(0.42, 0.58)
        self.road_half = w * rng.uniform(0.6, 0.85)  # half the road's width at the bottom row
        self.side = w * rng.uniform(0.25, 0.4)  # sidewalk width at the bottom row

    def scale_at(self, y: float) -> float:
        return max(0.03, (y - self.horizon) / (self.h - self.horizon))

    def metre(self, y: float) -> float:
        """Pixels per metre for an object standing at image row y."""
        return PX_PER_M * self.h * self.scale_at(y)

    def row(self, t: float) -> float:
        """Image row at depth t (0: the horizon, 1: the bottom row, > 1: below the image)."""
        return self.horizon + t * (self.h - self.horizon)

    def curb(self, left: bool, t: float) -> float:
        return self.vx + (-1 if left else 1) * (2 + t * (self.road_half - 2))

    def outer(self, left: bool, t: float) -> float:
        """The sidewalk's outer edge, where the facades stand."""
        return self.vx + (-1 if left else 1) * (4 + t * (self.road_half + self.side - 4))

    def on_sidewalk(self, left: bool, t: float, where: float) -> float:
        """x at depth t, ``where`` in [0, 1] from the curb to the outer edge."""
        return self.curb(left, t) + where * (self.outer(left, t) - self.curb(left, t))

    def lane(self, t: float, offset: float) -> float:
        return self.vx + offset * t * self.road_half


def layout_scene(h: int, w: int, rng: np.random.Generator, stable: bool = False) -> Scene:
    """Back to front: sky, buildings at the street's end, facades, ground, walls and fences, then
    the street objects sorted by distance, and the ego-vehicle hood.

    ``stable`` (version 3): draw the same random numbers at any resolution, so that a seed gives the
    same scene at 256x512 and at 1024x2048 (version 2 drew a number of lit windows that grew with the
    image's pixels, which changed every draw after it)."""
    cv = Canvas2(h, w, rng)
    st = Street(h, w, rng)
    _sky(cv)
    _street_end(cv, st, stable)
    for left in (True, False):
        _facades(cv, st, left)
    _ground(cv, st)
    for left in (True, False):
        _walls_and_fences(cv, st, left)
    for _, draw in sorted(_street_objects(cv, st), key=lambda o: o[0]):
        draw()
    _ego_hood(cv)
    return Scene(cv.label, cv.instance, cv.albedo, cv.lamps, cv.emissive, cv.reflect)


# ------------------------------------------------------------------------------ the street

def _sky(cv: Canvas2) -> None:
    sky = np.array(cv.colour("sky", 0.05), np.float32)
    cv.albedo[:] = sky * np.linspace(0.85, 1.1, cv.h, dtype=np.float32)[:, None, None]
    cv.instance[:] = LABEL_IDS["sky"]


def _street_end(cv: Canvas2, st: Street, stable: bool = False) -> None:
    """Buildings across the far end of the street, with lit windows (``stable``: as many at any
    resolution, as many as version 2 draws at 256x512)."""
    rng = cv.rng
    x, end = st.vx - st.w * 0.12, st.vx + st.w * 0.12
    while x < end:
        uw, uh = rng.uniform(0.02, 0.06), rng.uniform(0.08, 0.2)
        bw, top = uw * st.w, st.horizon - uh * st.h
        cv.fill("building", _rect(x, top, x + bw, st.horizon + 1), cv.colour("building", 0.1))
        windows = uw * 512 * uh * 256 / 40 if stable else bw * (st.horizon - top) / 40
        for _ in range(int(windows)):
            wx, wy = rng.uniform(x, x + bw), rng.uniform(top, st.horizon)
            if rng.random() < 0.4:
                cv.glow_rect(wx, wy, wx + 1, wy + 1, (1.0, 0.8, 0.45), rng.uniform(0.2, 0.5))
        x += bw


def _facades(cv: Canvas2, st: Street, left: bool) -> None:
    """Building facades standing on the sidewalk's outer edge, from far to beyond the image."""
    rng = cv.rng
    t = rng.uniform(0.0, 0.05)
    while t < 1.6:
        length = rng.uniform(0.08, 0.35)
        t1 = t + length
        if rng.random() < 0.06:  # a side street or a park: a gap in the facades
            if rng.random() < 0.5:
                _trees_in_gap(cv, st, left, t, t1)
            t = t1
            continue
        height = rng.uniform(12.0, 30.0)  # metres
        ys = [st.row(t), st.row(t1)]
        xs = [st.outer(left, t), st.outer(left, t1)]
        tops = [y - height * st.metre(y) for y in ys]
        col = cv.colour("building", 0.12)
        cv.fill("building", _poly([(xs[0], ys[0]), (xs[1], ys[1]), (xs[1], tops[1]), (xs[0], tops[0])]), col)
        _windows(cv, st, left, t, t1, height)
        t = t1


def _windows(cv: Canvas2, st: Street, left: bool, t0: float, t1: float, height: float) -> None:
    rng = cv.rng
    dark = (0.10, 0.11, 0.13)
    floors = int(height // 3.2)
    cols = max(1, int((t1 - t0) * 14))
    for i in range(cols):
        ta = t0 + (i + 0.25) * (t1 - t0) / cols
        tb = t0 + (i + 0.75) * (t1 - t0) / cols
        ya, yb = st.row(ta), st.row(tb)
        xa, xb = st.outer(left, ta), st.outer(left, tb)
        lit_floor = rng.random(floors)
        for f in range(floors):
            z0, z1 = 3.2 * f + 1.0, 3.2 * f + 2.4
            quad = [(xa, ya - z0 * st.metre(ya)), (xb, yb - z0 * st.metre(yb)),
                    (xb, yb - z1 * st.metre(yb)), (xa, ya - z1 * st.metre(ya))]
            pts = np.round(np.asarray(quad)).astype(np.int32)
            cv2.fillPoly(cv.albedo, [pts], dark)
            if lit_floor[f] < 0.3:
                cv.glow_poly(quad, (1.0, 0.8, 0.45), 0.15 + 0.3 * lit_floor[f])


def _trees_in_gap(cv: Canvas2, st: Street, left: bool, t0: float, t1: float) -> None:
    """A park between buildings: a mass of tree crowns."""
    ys = [st.row(t0), st.row(t1)]
    xs = [st.outer(left, t0), st.outer(left, t1)]
    tops = [y - 9.0 * st.metre(y) for y in ys]
    cv.fill("vegetation", _poly([(xs[0], ys[0]), (xs[1], ys[1]), (xs[1], tops[1]), (xs[0], tops[0])]),
            cv.colour("vegetation", 0.08))


def _ground(cv: Canvas2, st: Street) -> None:
    """Road, sidewalks, an optional grass verge between them, lane markings."""
    rng, vx, hz = cv.rng, st.vx, st.horizon
    near = 1.6  # beyond the bottom row, so the shapes reach the image border
    for left in (True, False):
        outer = [(st.outer(left, 0), hz), (st.outer(left, near), st.row(near))]
        curb = [(st.curb(left, near), st.row(near)), (st.curb(left, 0), hz)]
        cv.fill("sidewalk", _poly(outer + curb), cv.colour("sidewalk", 0.06))
        if rng.random() < 0.45:  # a grass verge along the curb
            verge = [(st.on_sidewalk(left, 0, 0.0), hz), (st.on_sidewalk(left, near, 0.0), st.row(near)),
                     (st.on_sidewalk(left, near, 0.3), st.row(near)), (st.on_sidewalk(left, 0, 0.3), hz)]
            cv.fill("terrain", _poly(verge), cv.colour("terrain", 0.06))
    road = [(st.curb(True, 0), hz), (st.curb(False, 0), hz), (st.curb(False, near), st.row(near)),
            (st.curb(True, near), st.row(near))]
    cv.fill("road", _poly(road), cv.colour("road", 0.04))
    for t in np.linspace(0.1, 1.0, 8):  # dashed centre line: road label, brighter paint
        y0, y1 = st.row(t), st.row(t + 0.05)
        cv2.line(cv.albedo, (int(vx), int(y0)), (int(vx), int(y1)), (0.8, 0.8, 0.75), max(1, int(0.15 * st.metre(y1))))


def _walls_and_fences(cv: Canvas2, st: Street, left: bool) -> None:
    rng = cv.rng
    for cls, height, p in (("wall", (1.2, 2.2), 0.2), ("fence", (0.9, 1.3), 0.4)):
        if rng.random() >= p:
            continue
        t0 = rng.uniform(0.05, 0.7)
        t1 = t0 + rng.uniform(0.15, 0.5)
        where = rng.uniform(0.7, 0.95)  # along the outer part of the sidewalk, in front of the facades
        ys = [st.row(t0), st.row(t1)]
        xs = [st.on_sidewalk(left, t0, where), st.on_sidewalk(left, t1, where)]
        z = rng.uniform(*height)
        tops = [y - z * st.metre(y) for y in ys]
        col = cv.colour(cls)
        cv.fill(cls, _poly([(xs[0], ys[0]), (xs[1], ys[1]), (xs[1], tops[1]), (xs[0], tops[0])]), col)
        if cls == "wall":  # a capping course: what tells a wall from a facade
            cv2.line(cv.albedo, (int(xs[0]), int(tops[0])), (int(xs[1]), int(tops[1])), (0.9, 0.9, 0.85),
                     max(1, int(0.12 * z * st.metre(ys[1]))))
        else:  # slats: the same label, darker gaps
            for k in range(1, 12):
                u = k / 12
                px, py = xs[0] + u * (xs[1] - xs[0]), ys[0] + u * (ys[1] - ys[0])
                cv2.line(cv.albedo, (int(px), int(py)), (int(px), int(py - z * st.metre(py))), (0.2, 0.18, 0.1), 1)


def _ego_hood(cv: Canvas2) -> None:
    h, w = cv.h, cv.w
    hood = int(h * cv.rng.uniform(0.03, 0.07))
    cv.fill("ego", lambda m: cv2.ellipse(m, (w // 2, h + hood), (int(w * 0.7), 2 * hood), 0, 180, 360, 1, -1),
            (0.05, 0.05, 0.06))


# ------------------------------------------------------------------------------ street objects

def _street_objects(cv: Canvas2, st: Street) -> list:
    """(row, draw) pairs: poles with lamps, signs and signals, trees, parked and moving vehicles,
    pedestrians, bicycles and motorcycles, parked or ridden."""
    rng = cv.rng
    objs = []

    def add(t: float, fn, *args):
        objs.append((st.row(t), lambda: fn(cv, st, *args)))

    for left in (True, False):
        for t in _spaced(rng, rng.integers(1, 3), 0.08, 1.0):  # street lamps
            add(t, _lamp_post, left, t)
        if rng.random() < 0.75:  # a tree-lined street
            for t in _spaced(rng, rng.integers(2, 7), 0.05, 1.0):
                add(t, _tree, left, t)
        for t in _spaced(rng, rng.integers(0, 4), 0.1, 1.0):  # cars parked along the curb
            add(t, _parked_car, left, t)
    for _ in range(rng.integers(1, 7)):  # signs on posts
        left, t = rng.random() < 0.5, rng.uniform(0.1, 1.0)
        add(t, _sign_post, left, t)
    for _ in range(rng.choice([0, 1, 2, 3, 4], p=[0.2, 0.3, 0.25, 0.15, 0.1])):  # traffic signals
        left, t = rng.random() < 0.5, rng.uniform(0.1, 0.9)
        add(t, _signal, left, t)
    for _ in range(rng.integers(0, 4)):  # traffic in the lanes
        t = rng.uniform(0.12, 1.0)
        cls = rng.choice(["car", "truck", "bus", "train"], p=[0.88, 0.04, 0.04, 0.04])
        add(t, _vehicle, t, cls, rng.uniform(-0.55, 0.55))
    for _ in range(rng.integers(0, 21)):  # pedestrians on the sidewalks
        left, t = rng.random() < 0.5, rng.uniform(0.08, 1.1)
        add(t, _person, st.on_sidewalk(left, t, rng.uniform(0.1, 0.9)), t)
    for _ in range(rng.integers(0, 4)):  # bicycles parked on the sidewalks
        left, t = rng.random() < 0.5, rng.uniform(0.1, 1.05)
        add(t, _two_wheeler, st.on_sidewalk(left, t, rng.uniform(0.5, 0.95)), t, "bicycle", False)
    for _ in range(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15])):  # riders near the curb
        t = rng.uniform(0.12, 1.05)
        cls = rng.choice(["bicycle", "motorcycle"], p=[0.75, 0.25])
        add(t, _two_wheeler, st.lane(t, rng.choice([-0.82, 0.82]) + rng.uniform(-0.08, 0.08)), t, cls, True)
    if rng.random() < 0.1:  # a parked motorcycle
        left, t = rng.random() < 0.5, rng.uniform(0.15, 1.0)
        add(t, _two_wheeler, st.on_sidewalk(left, t, 0.2), t, "motorcycle", False)
    return objs


def _spaced(rng, n: int, lo: float, hi: float) -> list[float]:
    return sorted(rng.uniform(lo, hi, size=int(n)).tolist())


def _lamp_post(cv: Canvas2, st: Street, left: bool, t: float) -> None:
    y = st.row(t)
    x = st.on_sidewalk(left, t, 0.15)
    m = st.metre(y)
    top = y - cv.rng.uniform(5.0, 7.0) * m
    width = max(1.0, 0.15 * m)
    cv.fill("pole", _rect(x - width / 2, top, x + width / 2, y))
    arm = 1.2 * m * (1 if left else -1)
    cv.fill("pole", _rect(min(x, x + arm), top, max(x, x + arm), top + max(1.0, 0.12 * m)))
    lx, ly = x + arm, top + 0.2 * m
    cv.lamps.append((lx, ly, (0.14 * st.scale_at(y) + 0.03) * st.h, cv.rng.uniform(0.35, 0.9), (1.0, 0.85, 0.6)))
    cv.glow_disc(lx, ly, max(1.0, 0.25 * m), (1.0, 0.9, 0.7), 1.5)


def _post(cv: Canvas2, st: Street, left: bool, t: float, offset: float, mount: tuple[float, float],
          width_m: float) -> tuple[float, float, float, float]:
    """A pole on the sidewalk, its height above the ground drawn from ``mount`` (metres): (x, y, metre, mount)."""
    y = st.row(t)
    x = st.on_sidewalk(left, t, offset)
    m = st.metre(y)
    height = cv.rng.uniform(*mount)
    width = max(1.0, width_m * m)
    cv.fill("pole", _rect(x - width / 2, y - height * m, x + width / 2, y))
    return x, y, m, height


def _sign_post(cv: Canvas2, st: Street, left: bool, t: float) -> None:
    x, y, m, mount = _post(cv, st, left, t, 0.08, (2.2, 2.8), 0.08)
    r = max(1.5, cv.rng.uniform(0.35, 0.5) * m)
    cy = y - mount * m - r * 0.8
    colour = SIGN_COLOURS[cv.rng.integers(len(SIGN_COLOURS))]
    shape = cv.rng.integers(0, 3)
    if shape == 0:
        draw = lambda msk: cv2.circle(msk, (int(x), int(cy)), int(r), 1, -1)  # noqa: E731
    elif shape == 1:
        draw = _poly([(x - r, cy + r * 0.8), (x + r, cy + r * 0.8), (x, cy - r)])
    else:
        draw = _rect(x - r, cy - r * 0.75, x + r, cy + r * 0.75)
    cv.fill("traffic sign", draw, colour, reflective=True)  # retro-reflective: bright in headlights at night


def _signal(cv: Canvas2, st: Street, left: bool, t: float) -> None:
    x, y, m, mount = _post(cv, st, left, t, 0.05, (2.5, 4.0), 0.12)
    hw, hh = max(1.5, 0.35 * m), max(3.0, 1.0 * m)
    top = y - mount * m - hh
    cv.fill("traffic light", _rect(x - hw / 2, top, x + hw / 2, top + hh), (0.10, 0.10, 0.09))
    lamp = cv.rng.integers(0, 3)
    ly = top + (lamp + 0.5) * hh / 3
    cv.glow_disc(x, ly, max(1.0, 0.12 * m), [(1, 0.15, 0.1), (1, 0.75, 0.1), (0.2, 1, 0.4)][lamp], 1.2)


def _tree(cv: Canvas2, st: Street, left: bool, t: float) -> None:
    y = st.row(t)
    x = st.on_sidewalk(left, t, cv.rng.uniform(0.1, 0.3))
    m = st.metre(y)
    trunk = max(1.0, 0.3 * m)
    r = cv.rng.uniform(1.8, 3.0) * m
    cy = y - cv.rng.uniform(3.8, 5.0) * m
    col = cv.colour("vegetation", 0.08)

    def draw(msk):
        cv2.rectangle(msk, (int(x - trunk / 2), int(cy)), (int(x + trunk / 2), int(y)), 1, -1)
        cv2.ellipse(msk, (int(x), int(cy)), (int(r), int(r * 0.85)), 0, 0, 360, 1, -1)

    cv.fill("vegetation", draw, col)


def _parked_car(cv: Canvas2, st: Street, left: bool, t: float) -> None:
    y = st.row(t)
    m = st.metre(y)
    x = st.curb(left, t) + (1 if left else -1) * 0.9 * m
    _car_shape(cv, x, y, m, cv.rng.uniform(2.2, 3.6), front=cv.rng.random() < 0.3, lit=False)


def _vehicle(cv: Canvas2, st: Street, t: float, cls: str, offset: float) -> None:
    y = st.row(t)
    m = st.metre(y)
    x = st.lane(t, offset)
    if cls == "car":
        _car_shape(cv, x, y, m, cv.rng.uniform(1.8, 2.2), front=cv.rng.random() < 0.5, lit=True)
        return
    width, height = {"truck": (2.5, 3.5), "bus": (2.55, 3.2), "train": (2.65, 3.6)}[cls]
    vw, vh = width * m, height * m
    x0, x1, y0 = x - vw / 2, x + vw / 2, y - vh
    inst, col, dark = cv.new_instance(cls), cv.colour(cls, 0.12), (0.08, 0.1, 0.12)
    if cls == "truck":  # a tall box with a small windscreen band
        cv.fill(cls, _rect(x0, y0, x1, y), col, inst)
        cv2.rectangle(cv.albedo, (int(x0 + vw * 0.1), int(y0 + vh * 0.55)), (int(x1 - vw * 0.1), int(y0 + vh * 0.7)),
                      dark, -1)
    elif cls == "bus":  # a lit window band across the back
        cv.fill(cls, _rect(x0, y0, x1, y), col, inst)
        band = ((x0 + vw * 0.06, y0 + vh * 0.12), (x1 - vw * 0.06, y0 + vh * 0.45))
        cv2.rectangle(cv.albedo, tuple(map(int, band[0])), tuple(map(int, band[1])), dark, -1)
        cv.glow_rect(*band[0], *band[1], (0.9, 0.8, 0.35), 0.15)
    else:  # a tram: a pantograph on the roof, separate lit windows
        cv.fill(cls, lambda msk: (cv2.rectangle(msk, (int(x0), int(y0)), (int(x1), int(y)), 1, -1),
                                  cv2.line(msk, (int(x - vw * 0.2), int(y0)), (int(x), int(y0 - vh * 0.3)), 1,
                                           max(1, int(0.05 * m)))), col, inst)
        for k in range(3):
            wx0 = x0 + vw * (0.08 + 0.3 * k)
            cv2.rectangle(cv.albedo, (int(wx0), int(y0 + vh * 0.15)), (int(wx0 + vw * 0.24), int(y0 + vh * 0.5)),
                          dark, -1)
            cv.glow_rect(wx0, y0 + vh * 0.15, wx0 + vw * 0.24, y0 + vh * 0.5, (0.7, 0.8, 0.95), 0.12)
    _vehicle_lights(cv, x0, x1, y - vh * 0.25, m, front=cv.rng.random() < 0.5, lit=True)


def _car_shape(cv: Canvas2, x: float, y: float, m: float, width_m: float, front: bool, lit: bool) -> None:
    """A car seen from behind, in front or at an angle: a body, a cabin with dark windows."""
    vw, vh = width_m * m, 1.5 * m
    x0, x1, y0 = x - vw / 2, x + vw / 2, y - vh
    inst, col = cv.new_instance("car"), cv.colour("car", 0.15)
    cabin = min(0.32, 0.75 / width_m)  # a narrower cabin when seen from the side
    cv.fill("car", _poly([(x0, y), (x1, y), (x1, y0 + vh * 0.45), (x1 - vw * cabin, y0), (x0 + vw * cabin, y0),
                          (x0, y0 + vh * 0.45)]), col, inst)
    cv2.rectangle(cv.albedo, (int(x0 + vw * (cabin + 0.05)), int(y0 + vh * 0.12)),
                  (int(x1 - vw * (cabin + 0.05)), int(y0 + vh * 0.42)), (0.08, 0.1, 0.12), -1)
    _vehicle_lights(cv, x0, x1, y - vh * 0.32, m, front, lit)


def _vehicle_lights(cv: Canvas2, x0: float, x1: float, ly: float, m: float, front: bool, lit: bool) -> None:
    rgb = (1.0, 0.95, 0.85) if front else (1.0, 0.1, 0.05)
    for lx in (x0 + (x1 - x0) * 0.12, x1 - (x1 - x0) * 0.12):
        cv.glow_disc(lx, ly, max(1.0, 0.12 * m), rgb, 1.2 if lit else 0.0)
        if lit and front:  # headlights light the road in front of the car
            cv.lamps.append((lx, ly + 0.6 * m, 1.5 * m, 0.6, rgb))


def _person(cv: Canvas2, st: Street, x: float, t: float) -> None:
    y = st.row(t)
    m = st.metre(y)
    ph = cv.rng.uniform(1.55, 1.9) * m
    pw = max(2.0, ph * 0.3)
    leg = max(1, int(pw * 0.4))
    inst, col = cv.new_instance("person"), cv.colour("person", 0.12)
    cv.fill("person", _person_mask(x, y, pw, ph, leg, 0.42, 0.9, 0.38), col, inst)


def _two_wheeler(cv: Canvas2, st: Street, x: float, t: float, cls: str, ridden: bool) -> None:
    """A bicycle (1.75 m long, 0.7 m wheels) or a motorcycle (2.1 m, 0.6 m wheels), seen from the side.

    The label fills the wheels, as Cityscapes annotators do; the image shows rims, tyres and
    frame, with the background seen through the wheels of a bicycle."""
    y = st.row(t)
    m = st.metre(y)
    length, wheel = (1.75, 0.7) if cls == "bicycle" else (2.1, 0.62)
    r = max(1.0, wheel * m / 2)
    x0, x1 = x - length * m / 2 + r, x + length * m / 2 - r
    wy = y - r
    rim = max(1, int(0.06 * m + 0.5))
    inst, col = cv.new_instance(cls), cv.colour(cls, 0.1)
    frame = [(x0, wy), (x, wy - r * 1.1), (x1, wy), (x1, wy - r * 1.7)]

    def outline(msk):
        cv2.circle(msk, (int(x0), int(wy)), int(r), 1, -1)
        cv2.circle(msk, (int(x1), int(wy)), int(r), 1, -1)
        cv2.fillPoly(msk, [np.round(np.asarray([(x0, wy), (x, wy - r * 1.2), (x1, wy - r * 1.8), (x1, wy)]))
                     .astype(np.int32)], 1)

    def painted(msk):
        if cls == "motorcycle":  # a body between the wheels, solid wheels
            outline(msk)
            return
        for cx in (x0, x1):
            cv2.circle(msk, (int(cx), int(wy)), int(r), 1, rim)
        for a, b in zip(frame[:-1], frame[1:]):
            cv2.line(msk, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, rim)

    cv.fill(cls, outline, col, inst, paint=painted)
    if cls == "motorcycle":
        cv.glow_disc(x1 + r * 0.6, wy - r, max(1.0, r * 0.35), (1.0, 0.95, 0.8), 1.0 if ridden else 0.0)
    if ridden:
        rh = cv.rng.uniform(0.9, 1.1) * m  # a seated rider's torso and head above the saddle
        rw = max(2.0, 0.35 * m)
        seat = wy - r * 1.2
        rinst, rcol = cv.new_instance("rider"), cv.colour("rider", 0.15)

        def rider(msk):
            cv2.rectangle(msk, (int(x - rw / 2), int(seat - rh * 0.75)), (int(x + rw / 2), int(seat + r * 0.4)), 1, -1)
            cv2.circle(msk, (int(x), int(seat - rh * 0.85)), max(1, int(rw * 0.45)), 1, -1)

        cv.fill("rider", rider, rcol, rinst)


# ------------------------------------------------------------------------------ rendering

def render(scene: Scene, night: bool, rng: np.random.Generator, stable: bool = False) -> np.ndarray:
    """The scene's albedo under day or night light; RGB uint8, the same bits on any x86 machine.

    ``stable`` (version 3): the scene's light, exposure and blur are drawn before any noise, and the
    noise (one number per pixel) from a generator of its own, so the same scene renders under the same
    light at any resolution (version 2 drew the night's light after the day's per-pixel noise)."""
    h, w = scene.label.shape
    if not night:
        light = np.float32(rng.uniform(0.85, 1.1))
        noise = np.random.default_rng(rng.integers(2**63)) if stable else rng
        img = np.multiply(scene.albedo, light)
        img = np.add(img, np.multiply(noise.standard_normal(img.shape, dtype=np.float32), np.float32(0.012)))
        img = exact.gaussian_blur(img, 0.5)
        return exact.gamma_to_uint8(np.clip(img, 0, 1), 1.25)

    # Light: a low ambient level, varying 5:1 between scenes, plus pools under lamps and in front
    # of headlights, computed at 1/4 resolution (light varies slowly) and enlarged exactly.
    f = 4
    sh, sw = -(-h // f), -(-w // f)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float64) * f + (f - 1) / 2
    ambient = float(exact.exp(rng.uniform(LN_AMBIENT[0], LN_AMBIENT[1])))
    if stable:  # every scene-level draw now, then the per-pixel noise from its own generator
        shine_u, blur_u, gain_u = rng.uniform(0.15, 0.45), rng.uniform(0.5, 1.0), rng.uniform(0.8, 1.1)
        noise = np.random.default_rng(rng.integers(2**63))
    light = np.full((sh, sw, 3), ambient, np.float64)
    light[: int(sh * 0.45)] += 0.006  # sky glow over the city
    for lx, ly, rad, inten, rgb in scene.lamps:
        d2 = np.add(np.square(np.subtract(xx, lx)), np.square(np.multiply(np.subtract(yy, ly), 0.7)))
        pool = np.multiply(exact.exp(np.divide(np.multiply(d2, -0.5), rad * rad)), inten)
        light = np.add(light, np.multiply(pool[..., None], np.asarray(rgb, np.float64)))
    light = exact.upsample(light.astype(np.float32), f, (h, w))
    img = np.multiply(scene.albedo, light)
    sky = scene.label == C["sky"]
    img[sky] = np.add(np.float32([0.007, 0.008, 0.015]), np.multiply(img[sky], np.float32(0.04)))  # a dark sky
    emis = scene.emissive
    glare = np.add(exact.upsample(exact.gaussian_blur(exact.downsample(_pad(emis, 2), 2), 1.5), 2, (h, w)),
                   np.multiply(exact.upsample(exact.gaussian_blur(exact.downsample(_pad(emis, 4), 4), 2.2), 4, (h, w)),
                               np.float32(0.6)))
    img = np.add(np.add(img, np.multiply(emis, np.float32(1.5))), glare)
    # Signs are retro-reflective: they send headlight back to the camera, bright whatever the ambient.
    shine = np.multiply(scene.reflect, np.float32(shine_u if stable else rng.uniform(0.15, 0.45)))[..., None]
    img = np.add(img, np.multiply(scene.albedo, shine))
    img = exact.gaussian_blur(img, float(blur_u if stable else rng.uniform(0.5, 1.0)))  # defocus and motion blur
    # Sensor noise on the raw signal: shot noise grows with it, read noise is constant.
    sigma = np.add(np.float32(0.004), np.multiply(np.float32(0.03), np.sqrt(np.clip(img, 0, None))))
    img = np.add(img, np.multiply((noise if stable else rng).standard_normal(img.shape, dtype=np.float32), sigma))
    # Auto-exposure: the camera meters the frame and raises exposure and gain until its mean reaches
    # middle grey (18 % linear), up to its limit (x8 here); darker scenes stay darker and come out
    # noisier, as night footage does. Lamps and headlights then over-expose.
    gain = np.float32(min(8.0, max(1.0, 0.18 / max(_mean(img), 1e-6))) * (gain_u if stable else rng.uniform(0.8, 1.1)))
    return exact.gamma_to_uint8(np.clip(np.multiply(img, gain), 0, 1), 1.5)


def _mean(img: np.ndarray) -> float:
    """The mean of an image, summed in a fixed order (numpy's own sum may use SIMD-dependent orders)."""
    small = exact.downsample(_pad(img, 8), 8)
    return exact._ordered_sum(small) / small.size


def _pad(img: np.ndarray, f: int) -> np.ndarray:
    """Edge-pad H and W up to multiples of f (for the block means of downsample)."""
    h, w = img.shape[:2]
    ph, pw = -h % f, -w % f
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else img
