"""Generator version 1, kept as it was so that earlier results can be reproduced.

Each scene is laid out once (a trainId map, an instance map and a per-pixel albedo) and then
rendered twice: by day (sunlight, mild noise) and by night (low ambient light, street lamps and
headlights with glare, over-exposure near lights, sensor noise, blur). Scenes are drawn in
perspective, so far objects are small; poles, traffic lights and signs are a few pixels wide,
riders sit on bicycles and motorcycles.

Known limits, fixed in version 2 (docs/design.md 4): its float rendering goes through OpenCV's
and numpy's CPU-dispatched kernels, so the pixels differ between x86 machines with different
SIMD units (AVX2 vs AVX-512); class sizes and frequencies are far from real street scenes (a
third of the road's share, ten times the terrain, sky and large vehicles); bicycles are labelled
as 1-2 pixel rings, which no model at any resolution learns.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nightlab.data.synthetic.common import CLOTHES, LABEL_IDS, C, Scene, _poly, _rect  # noqa: F401
from nightlab.data.synthetic.common import Canvas as _Canvas
from nightlab.data.synthetic.common import _person as _person_mask


@dataclass
class _Street:
    """The scene's perspective: horizon row, vanishing point, road and sidewalk widths at the bottom."""
    h: int
    w: int
    horizon: int
    vx: float
    road_half_bottom: float = 0.0
    side: float = 0.0

    def scale_at(self, y: float) -> float:
        """Apparent size factor of an object standing at image row y."""
        return max(0.05, (y - self.horizon) / (self.h - self.horizon))

    def row(self, t: float) -> float:
        """Image row at depth t in [0, 1] (0: horizon, 1: bottom)."""
        return self.horizon + t * (self.h - self.horizon)

    def outer_edge(self, left: bool, t: float) -> float:
        """x of the sidewalk's outer edge at depth t."""
        return self.vx + (-1 if left else 1) * (6 + t * (self.road_half_bottom + self.side - 6))

    def on_sidewalk(self, left: bool, t: float, rng: np.random.Generator) -> tuple[float, float]:
        """A point at depth t along the outer part of a sidewalk."""
        edge = self.vx + (-1 if left else 1) * (2 + t * (self.road_half_bottom - 2))
        return edge + rng.uniform(0.3, 0.8) * (self.outer_edge(left, t) - edge), self.row(t)

    def lane(self, t: float, offset: float) -> float:
        """x on the road at depth t, ``offset`` in [-1, 1] of the road's half width."""
        return self.vx + offset * t * self.road_half_bottom


def layout_scene(h: int, w: int, rng: np.random.Generator) -> Scene:
    """Lay out one scene, back to front: sky, buildings, trees, ground, walls and fences, then the
    street objects sorted by depth, and the ego-vehicle hood. Each layer is one helper below; the
    order of the random draws is part of the generator's output, so keep it."""
    cv = _Canvas(h, w, rng)
    street = _Street(h, w, horizon=int(h * rng.uniform(0.36, 0.46)), vx=w * rng.uniform(0.4, 0.6))
    _sky(cv)
    _buildings(cv, street.horizon)
    _trees(cv, street.horizon)
    _ground(cv, street)
    _walls_and_fences(cv, street)
    for _, draw in sorted(_street_objects(cv, street), key=lambda o: o[0]):  # far to near
        draw()
    _ego_hood(cv)
    return Scene(cv.label, cv.instance, cv.albedo, cv.lamps, cv.emissive)


def _sky(cv: _Canvas) -> None:
    sky = np.array(cv.colour("sky", 0.05))
    cv.albedo[:] = sky * np.linspace(0.85, 1.1, cv.h, dtype=np.float32)[:, None, None]  # a gradient by row
    cv.instance[:] = LABEL_IDS["sky"]


def _buildings(cv: _Canvas, horizon: int) -> None:
    """Buildings along the horizon, with windows that light up at night."""
    rng, h, w = cv.rng, cv.h, cv.w
    x = -rng.uniform(0, 30)
    while x < w:
        bw = rng.uniform(0.08, 0.22) * w
        top = horizon - rng.uniform(0.12, 0.38) * h
        col = cv.colour("building", 0.1)
        cv.fill("building", _rect(x, top, x + bw, horizon + 2), col)
        for wy in np.arange(top + 6, horizon - 6, rng.uniform(8, 14)):
            for wx in np.arange(x + 4, x + bw - 6, rng.uniform(8, 14)):
                if rng.random() < 0.35:
                    cv.glow(wx + 2, wy + 2, 2, (1.0, 0.8, 0.45), rng.uniform(0.2, 0.5))
        x += bw + rng.uniform(-5, 10)


def _trees(cv: _Canvas, horizon: int) -> None:
    """Trees (vegetation) in front of some buildings."""
    rng, h, w = cv.rng, cv.h, cv.w
    for _ in range(rng.integers(1, 5)):
        tx, r = rng.uniform(0, w), rng.uniform(0.04, 0.1) * w
        ty = horizon - rng.uniform(0, 0.1) * h
        col = cv.colour("vegetation", 0.06)
        cv.fill("vegetation", lambda m, tx=tx, ty=ty, r=r: cv2.ellipse(m, (int(tx), int(ty)), (int(r), int(r * 0.8)), 0, 0, 360, 1, -1), col)


def _ground(cv: _Canvas, st: _Street) -> None:
    """Terrain, then a road trapezoid with sidewalks on both sides, and lane markings."""
    rng, h, w, vx, horizon = cv.rng, cv.h, cv.w, st.vx, st.horizon
    st.road_half_bottom = w * rng.uniform(0.3, 0.42)
    st.side = w * rng.uniform(0.12, 0.2)
    half, side = st.road_half_bottom, st.side
    cv.fill("terrain", _poly([(0, horizon), (w, horizon), (w, h), (0, h)]))
    cv.fill("sidewalk", _poly([(vx - 6, horizon), (vx - 2, horizon), (vx - half, h), (vx - half - side, h)]))
    cv.fill("sidewalk", _poly([(vx + 2, horizon), (vx + 6, horizon), (vx + half + side, h), (vx + half, h)]))
    cv.fill("road", _poly([(vx - 2, horizon), (vx + 2, horizon), (vx + half, h), (vx - half, h)]))
    # Lane markings are part of the road: brighter albedo, same label.
    for t in np.linspace(0.15, 0.95, 6):
        y0, y1 = st.row(t), st.row(t + 0.06)
        m = np.zeros((h, w), np.uint8)
        cv2.line(m, (int(vx), int(y0)), (int(vx), int(y1)), 1, max(1, int(3 * st.scale_at(y1))))
        cv.albedo[m > 0] = (0.8, 0.8, 0.75)


def _walls_and_fences(cv: _Canvas, st: _Street) -> None:
    """Walls and fences along the outer sidewalk edges."""
    rng, h = cv.rng, cv.h
    for left in (True, False):
        for cls in ("wall", "fence"):
            if rng.random() < (0.8 if cls == "wall" else 0.6):
                t0 = rng.uniform(0.05, 0.6)
                t1 = t0 + rng.uniform(0.25, 0.4)  # long enough to read as a wall, not a block
                xs = [st.outer_edge(left, t) for t in (t0, t1)]
                ys = [st.row(t) for t in (t0, t1)]
                hgt = [(0.2 if cls == "wall" else 0.09) * h * st.scale_at(y) + 2 for y in ys]
                col = cv.colour(cls)
                cv.fill(cls, _poly([(xs[0], ys[0]), (xs[1], ys[1]), (xs[1], ys[1] - hgt[1]), (xs[0], ys[0] - hgt[0])]), col)
                if cls == "wall":  # a capping course along the top: the cue that tells a wall from a facade
                    cv2.line(cv.albedo, (int(xs[0]), int(ys[0] - hgt[0])), (int(xs[1]), int(ys[1] - hgt[1])), (0.9, 0.9, 0.85), max(1, int(hgt[1] * 0.12)))
                if cls == "fence":  # slats: the same label, darker gaps
                    for k in range(8):
                        u = k / 8
                        px, py = xs[0] + u * (xs[1] - xs[0]), ys[0] + u * (ys[1] - ys[0])
                        cv2.line(cv.albedo, (int(px), int(py)), (int(px), int(py - hgt[0])), (0.2, 0.18, 0.1), 1)


def _street_objects(cv: _Canvas, st: _Street) -> list:
    """Poles (with lights, signs or lamps), vehicles, pedestrians and riders: (depth row, draw) pairs."""
    rng, h = cv.rng, cv.h
    objects = []
    n_lamps = rng.integers(2, 5)
    for _ in range(rng.integers(4, 9)):  # poles, some carrying lights, signs or lamps
        left = rng.random() < 0.5
        px, py = st.on_sidewalk(left, rng.uniform(0.1, 1.0), rng)
        kind = rng.choice(["light", "sign", "lamp", "plain"], p=[0.35, 0.35, 0.2, 0.1])
        objects.append((py, lambda px=px, py=py, kind=kind: _pole(cv, px, py, st.scale_at(py), kind, h)))
    for _ in range(n_lamps):  # extra street lamps give the night scene its light pools
        left = rng.random() < 0.5
        px, py = st.on_sidewalk(left, rng.uniform(0.2, 0.9), rng)
        objects.append((py, lambda px=px, py=py: _pole(cv, px, py, st.scale_at(py), "lamp", h)))
    for _ in range(rng.integers(2, 6)):  # cars, trucks, buses, sometimes a tram (train)
        t = rng.uniform(0.15, 0.95)
        cls = rng.choice(["car", "truck", "bus", "train"], p=[0.45, 0.2, 0.2, 0.15])
        y = st.row(t)
        x = st.lane(t, rng.uniform(-0.7, 0.7))
        objects.append((y, lambda x=x, y=y, cls=cls: _vehicle(cv, x, y, st.scale_at(y), cls, h)))
    for _ in range(rng.integers(2, 9)):  # pedestrians on sidewalks
        left = rng.random() < 0.5
        px, py = st.on_sidewalk(left, rng.uniform(0.1, 1.0), rng)
        objects.append((py, lambda px=px, py=py: _person(cv, px, py, st.scale_at(py), h)))
    for _ in range(rng.integers(1, 4)):  # riders on bicycles or motorcycles, on the road edge
        t = rng.uniform(0.15, 1.0)
        y = st.row(t)
        x = st.lane(t, rng.choice([-0.85, 0.85]) + rng.uniform(-0.1, 0.1))
        cls = rng.choice(["bicycle", "motorcycle"])
        ridden = rng.random() < 0.8
        objects.append((y, lambda x=x, y=y, cls=cls, ridden=ridden: _two_wheeler(cv, x, y, st.scale_at(y), cls, ridden, h)))
    return objects


def _ego_hood(cv: _Canvas) -> None:
    """The ego-vehicle hood at the bottom: labelled ego vehicle, ignored in evaluation."""
    h, w = cv.h, cv.w
    hood = int(h * cv.rng.uniform(0.03, 0.07))
    cv.fill("ego", lambda m: cv2.ellipse(m, (w // 2, h + hood), (int(w * 0.7), 2 * hood), 0, 180, 360, 1, -1), (0.05, 0.05, 0.06))


def _pole(cv: _Canvas, x, y, s, kind, h):
    height = (0.55 if kind == "lamp" else 0.42) * h * s + 6
    width = max(1.0, 3.0 * s + 0.5)
    top = y - height
    cv.fill("pole", _rect(x - width / 2, top, x + width / 2, y))
    if kind == "light":
        lw, lh = max(2, 5 * s + 1), max(4, 12 * s + 2)
        cv.fill("traffic light", _rect(x - lw / 2, top - lh, x + lw / 2, top))
        lamp = cv.rng.integers(0, 3)
        ly = top - lh + (lamp + 0.5) * lh / 3
        cv.glow(x, ly, max(1, lw / 3), [(1, 0.15, 0.1), (1, 0.75, 0.1), (0.2, 1, 0.4)][lamp], 1.0)
    elif kind == "sign":
        r = max(2.0, 6 * s + 1)
        shape = cv.rng.integers(0, 2)
        if shape == 0:
            cv.fill("traffic sign", lambda m: cv2.circle(m, (int(x), int(top)), int(r), 1, -1))
        else:
            cv.fill("traffic sign", _rect(x - r, top - r, x + r, top + r * 0.6))
    elif kind == "lamp":
        arm = 10 * s + 3
        cv.fill("pole", _rect(x, top, x + arm, top + width))
        cv.lamps.append((x + arm, top + 2, (0.18 * s + 0.04) * h, cv.rng.uniform(0.5, 1.0), (1.0, 0.85, 0.6)))
        cv.glow(x + arm, top + 2, 2 * s + 1.5, (1.0, 0.9, 0.7), 1.5)


def _vehicle(cv: _Canvas, x, y, s, cls, h):
    """Each vehicle class has its own silhouette and night signature, as in real streets: a car's
    sloped cabin, a truck's low cab in front of a pale cargo box, a bus's lit window band, a
    tram's (train) long body with lit separate windows and a pantograph on the roof."""
    dims = {"car": (0.18, 0.1), "truck": (0.24, 0.2), "bus": (0.34, 0.22), "train": (0.6, 0.22)}[cls]
    vw, vh = dims[0] * h * 2 * s + 4, dims[1] * h * s * 1.6 + 3
    inst = cv.new_instance(cls)
    col = cv.colour(cls, 0.12)
    x0, x1, y0 = x - vw / 2, x + vw / 2, y - vh
    dark = (0.08, 0.1, 0.12)
    cab_left = cv.rng.random() < 0.5  # which end faces the camera side
    if cls == "car":
        cv.fill(cls, _poly([(x0, y), (x1, y), (x1, y0 + vh * 0.45), (x1 - vw * 0.2, y0), (x0 + vw * 0.2, y0), (x0, y0 + vh * 0.45)]), col, inst)
        cv2.rectangle(cv.albedo, (int(x0 + vw * 0.25), int(y0 + vh * 0.15)), (int(x1 - vw * 0.25), int(y0 + vh * 0.45)), dark, -1)
    elif cls == "truck":
        cab_w = vw * 0.3
        cx0, cx1 = (x0, x0 + cab_w) if cab_left else (x1 - cab_w, x1)
        bx0, bx1 = (cx1, x1) if cab_left else (x0, cx0)
        cv.fill(cls, lambda m: (cv2.rectangle(m, (int(cx0), int(y0 + vh * 0.35)), (int(cx1), int(y)), 1, -1),
                                cv2.rectangle(m, (int(bx0), int(y0)), (int(bx1), int(y)), 1, -1)), col, inst)
        cv.albedo[int(y0):int(y) + 1, max(0, int(bx0)):max(0, int(bx1)) + 1] = np.clip(np.array((0.85, 0.85, 0.82)) + cv.rng.normal(0, 0.04, 3), 0, 1)
        cv2.rectangle(cv.albedo, (int(cx0 + cab_w * 0.15), int(y0 + vh * 0.42)), (int(cx1 - cab_w * 0.15), int(y0 + vh * 0.62)), dark, -1)
    elif cls == "bus":
        cv.fill(cls, _rect(x0, y0, x1, y), col, inst)
        band = (int(x0 + vw * 0.04), int(y0 + vh * 0.12)), (int(x1 - vw * 0.04), int(y0 + vh * 0.45))
        cv2.rectangle(cv.albedo, *band, dark, -1)
        cv2.rectangle(cv.emissive, *band, (0.14, 0.12, 0.05), -1)  # lit interior: a warm band at night
    else:  # train (tram)
        cv.fill(cls, lambda m: (cv2.rectangle(m, (int(x0), int(y0)), (int(x1), int(y)), 1, -1),
                                cv2.line(m, (int(x - vw * 0.1), int(y0)), (int(x), int(y0 - vh * 0.35)), 1, max(1, int(s + 0.5))),
                                cv2.line(m, (int(x + vw * 0.1), int(y0)), (int(x), int(y0 - vh * 0.35)), 1, max(1, int(s + 0.5)))), col, inst)
        cv2.rectangle(cv.albedo, (int(x0), int(y - vh * 0.3)), (int(x1), int(y - vh * 0.2)), (0.8, 0.1, 0.1), -1)  # livery stripe
        n = max(3, int(vw / (vh * 0.5)))
        for k in range(n):
            wx0 = x0 + vw * (k + 0.2) / n
            wx1 = x0 + vw * (k + 0.8) / n
            win = (int(wx0), int(y0 + vh * 0.15)), (int(wx1), int(y0 + vh * 0.5))
            cv2.rectangle(cv.albedo, *win, dark, -1)
            cv2.rectangle(cv.emissive, *win, (0.12, 0.14, 0.18), -1)  # cold white light, separate windows
    # head or tail lights: bright at night
    r = max(1, 2.5 * s + 0.5)
    front = cv.rng.random() < 0.5
    rgb = (1.0, 0.95, 0.85) if front else (1.0, 0.1, 0.05)
    for lx in (x0 + vw * 0.12, x1 - vw * 0.12):
        cv.glow(lx, y - vh * 0.3, r, rgb, 1.2)
        if front:
            cv.lamps.append((lx, y - vh * 0.3, (0.12 * s + 0.023) * h, 0.5, rgb))


def _person(cv: _Canvas, x, y, s, h):
    """A pedestrian stands: two legs with a gap below the coat; a rider (below) only sits."""
    ph = 0.34 * h * s + 7
    pw = max(3, ph * 0.36)
    inst = cv.new_instance("person")
    col = cv.colour("person", 0.12)
    leg = max(1, int(pw * 0.4))
    cv.fill("person", _person_mask(x, y, pw, ph, leg, 0.4, 0.88, 0.4), col, inst)


def _two_wheeler(cv: _Canvas, x, y, s, cls, ridden, h):
    length = 0.16 * h * s + 5
    r = max(1, int(length * 0.22))
    inst = cv.new_instance(cls)
    col = cv.colour(cls, 0.1)
    thick = max(1, int(1.2 * s + 0.5))
    x0, x1 = x - length / 2 + r, x + length / 2 - r
    wy = y - r

    def draw(m):
        cv2.circle(m, (int(x0), int(wy)), r, 1, thick if cls == "bicycle" else -1)
        cv2.circle(m, (int(x1), int(wy)), r, 1, thick if cls == "bicycle" else -1)
        if cls == "bicycle":
            cv2.line(m, (int(x0), int(wy)), (int(x), int(wy - r * 1.2)), 1, thick)
            cv2.line(m, (int(x1), int(wy)), (int(x), int(wy - r * 1.2)), 1, thick)
            cv2.line(m, (int(x1), int(wy)), (int(x1), int(wy - r * 1.8)), 1, thick)
        else:
            cv2.rectangle(m, (int(x0), int(wy - r * 1.5)), (int(x1), int(wy - r * 0.2)), 1, -1)

    cv.fill(cls, draw, col, inst)
    if cls == "motorcycle":
        cv.glow(x1 + r * 0.6, wy - r, max(1, r * 0.35), (1.0, 0.95, 0.8), 1.0)
    if ridden:
        rh = 0.22 * h * s + 4
        rw = max(2, rh * 0.35)
        rinst = cv.new_instance("rider")
        rcol = cv.colour("rider", 0.15)
        cv.fill("rider", lambda m: (cv2.rectangle(m, (int(x - rw / 2), int(wy - r - rh * 0.8)), (int(x + rw / 2), int(wy - r * 0.6)), 1, -1),
                                    cv2.circle(m, (int(x), int(wy - r - rh * 0.9)), max(1, int(rw * 0.45)), 1, -1)), rcol, rinst)


def render(scene: Scene, night: bool, rng: np.random.Generator) -> np.ndarray:
    """Render the scene's albedo under day or night lighting; returns RGB uint8."""
    h, w = scene.label.shape
    if not night:
        light = rng.uniform(0.85, 1.1)
        img = scene.albedo * light + 0.012 * rng.standard_normal(scene.albedo.shape, dtype=np.float32)
        img = cv2.GaussianBlur(img, (0, 0), 0.5)
        return (np.clip(img, 0, 1) ** (1 / 1.1) * 255 + 0.5).astype(np.uint8)

    # Light map: low ambient plus Gaussian pools around lamps and headlights (computed at 1/4 res).
    sh, sw = max(1, h // 4), max(1, w // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32) * 4
    ambient = rng.uniform(0.02, 0.05)
    lightmap = np.full((sh, sw, 3), ambient, np.float32)
    lightmap[: int(sh * 0.45)] += 0.01  # sky glow over the city
    for lx, ly, rad, inten, rgb in scene.lamps:
        pool = inten * np.exp(-((xx - lx) ** 2 + ((yy - ly) * 0.7) ** 2) / (2 * rad**2))
        lightmap += pool[..., None] * np.asarray(rgb, np.float32)
    lightmap = cv2.resize(lightmap, (w, h), interpolation=cv2.INTER_LINEAR)
    img = scene.albedo * lightmap
    # Sky at night is dark blue-grey, not a lit albedo.
    sky = scene.label == C["sky"]
    img[sky] = np.asarray((0.03, 0.035, 0.06), np.float32) + 0.4 * img[sky] * 0.1
    emis = scene.emissive
    glare = cv2.GaussianBlur(emis, (0, 0), 3.0) * 1.0 + cv2.GaussianBlur(emis, (0, 0), 9.0) * 0.6
    img = img + emis * 1.5 + glare
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.1))  # defocus / motion blur
    # Sensor noise: shot noise grows with signal, read noise is constant; then exposure gain.
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * (0.02 + 0.05 * np.sqrt(np.clip(img, 0, None)))
    gain = rng.uniform(1.0, 1.5)
    img = np.clip(img * gain, 0, 1) ** (1 / 1.5)  # over-exposure clips near lights
    return (img * 255 + 0.5).astype(np.uint8)
