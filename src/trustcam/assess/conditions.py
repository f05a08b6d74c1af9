"""Realistic image corruptions at graded severities, for measuring detector robustness per condition.

Follows Michaelis et al. 2019, "Benchmarking Robustness in Object Detection": every condition has five
severities, each a FIXED parameter value (not a random range), so "fog at severity 3" is the same level of
fog on every image and run; only nuisance variables (where the rain drops fall, the blur direction, where the
glare source sits) come from ``seed``. mPC is the mean performance over conditions and severities, rPC the
mPC divided by the clean performance.

Every corruption maps a BGR uint8 image to a BGR uint8 image of the same height and width, so ground-truth
boxes stay valid, and is deterministic for a given seed. Pixel lengths (blur, streaks, flakes) are set for
640x480 and scale with the image diagonal, so a severity is the same degradation at any resolution.

albumentations supplies the effects it models well (rain-streak rendering, motion-blur kernels, JPEG,
down-scaling). The rest are written here: albumentations has no model of sensor noise in low light, IR night
vision or H.264, and its RandomSnow brightens the scene instead of drawing flakes; its RandomFog (~75 ms per
640x480 image: it blends hundreds of white discs), RandomSunFlare (13-25 ms) and Defocus (~12 ms: a DFT
convolution) are too slow for a benchmark loop. Everything but H.264 (~4-8 ms) takes 0.3-3 ms per 640x480
image on one core (``python bench/assess.py``).
"""

from __future__ import annotations

import fractions
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import albumentations as A
import albumentations.augmentations.pixel.functional as fpixel
import av
import cv2
import numpy as np

CONDITIONS: tuple[str, ...] = ("low_light", "ir_night", "fog", "rain", "snow", "glare", "motion_blur", "defocus",
                               "jpeg", "h264", "low_resolution")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


class ConditionError(ValueError):
    """An unknown condition name or a severity outside :data:`SEVERITIES`."""


# --------------------------------------------------------------------------------------------------------------
# shared helpers

_GAMMA = 2.2  # sRGB is close to a 2.2 power law; exact enough for light arithmetic
_TO_LINEAR = ((np.arange(256, dtype=np.float32) / 255.0) ** _GAMMA).astype(np.float32)
# 256 equiprobable quantiles of N(0, 1): uniform random bytes through this table are Gaussian noise (tails cut at
# ±2.9 sigma) at a fraction of the cost of Generator.standard_normal (0.5 ms vs 7 ms for a 640x480x3 image)
_GAUSS = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


# Per-thread scratch arrays, reused from call to call and across image sizes. Each fresh image-sized float array
# costs its page faults (~3,500 a call, 5 ms on a 640x480 image in a VM: more than the arithmetic); reuse pays
# them once. (OpenCV writes into a ``dst`` of the right shape and type; results are always taken from the return
# value, so a mismatch would cost speed, never correctness.)
_LOCAL = threading.local()
# about 40 MB a thread once every condition has run on 640x480 images, 270 MB at 1080p; larger images allocate
# afresh rather than pin more
_MAX_SCRATCH = 1920 * 1088 * 3


def _buf(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """Scratch array ``name`` of ``shape`` (contents undefined), valid until the next request for ``name`` in
    this thread: a view of a per-thread block that grows to the largest size asked."""
    size = math.prod(shape)
    if size > _MAX_SCRATCH:
        return np.empty(shape, dtype)
    blocks: dict[str, np.ndarray] = _LOCAL.__dict__.setdefault("buffers", {})
    block = blocks.get(name)
    if block is None or block.size < size or block.dtype != dtype:
        block = blocks[name] = np.empty(size, dtype)
    return block[:size].reshape(shape)


def _gauss(rng: np.random.Generator, shape: tuple[int, ...], name: str = "gauss") -> np.ndarray:
    """Standard-normal float32 noise of ``shape`` (a scratch array)."""
    raw = np.frombuffer(rng.bytes(math.prod(shape)), np.uint8).reshape(shape)
    return cv2.LUT(raw, _GAUSS, dst=_buf(name, shape))


def _to_srgb_u8(linear: np.ndarray) -> np.ndarray:
    """Linear light (0..1, float32; overwritten) back to 8-bit sRGB-ish values."""
    np.clip(linear, 1e-6, 1.0, out=linear)  # exact zeros send cv2.pow down a path 15x slower
    linear = cv2.pow(linear, 1.0 / _GAMMA, dst=linear)
    return cv2.convertScaleAbs(linear, alpha=255.0)


def _scale(image: np.ndarray) -> float:
    """Pixel lengths (blur, flakes, streaks) are set for 640x480 and scale with the image diagonal, so a
    severity means the same degradation at any resolution."""
    return math.hypot(*image.shape[:2]) / 800.0


def _odd(value: float, least: int = 3) -> int:
    return max(least, 2 * round((value - 1) / 2) + 1)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 4) -> np.ndarray:
    """Fractal low-frequency noise in about [-1, 1] (float32, h x w, a scratch array): patchy fog. Built at
    1/4 resolution (it has no fine detail) and scaled up once."""
    hs, ws = max(1, h // 4), max(1, w // 4)
    out = np.zeros((hs, ws), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(octaves):
        cells = 3 * 2**octave
        grid = rng.random((cells, cells), dtype=np.float32) * 2.0 - 1.0
        out += np.float32(amp) * cv2.resize(grid, (ws, hs), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out *= np.float32(1 / total)
    return cv2.resize(out, (w, h), dst=_buf("smooth", (h, w)), interpolation=cv2.INTER_LINEAR)


def _convolve(image: np.ndarray, kernel: np.ndarray, block: int = 11) -> np.ndarray:
    """Correlate ``image`` with a sparse, non-negative, normalised kernel (a motion-blur line), fast.

    OpenCV's filter2D switches to a DFT for kernels over 11x11 (~12 ms on 640x480) although a line has only
    a few non-zero taps, which the direct path skips. So the kernel is cut into ``block``-sized tiles, each
    tile filtered directly (uint8 to int16, weights x64: 6 fractional bits, no float copy of the image) and
    the results summed at their offsets (1-2 ms for a 33-px line).
    """
    k = kernel.shape[0]
    if k <= block:
        return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    c, cb = k // 2, block // 2
    h, w = image.shape[:2]
    # the last row/column of tiles overhangs the kernel (zero taps): pad for it so every slice is in range
    pad_shape = (h + 2 * c + block, w + 2 * c + block, *image.shape[2:])
    padded = cv2.copyMakeBorder(image, c, c + block, c, c + block, cv2.BORDER_REFLECT_101,
                                dst=_buf("conv_padded", pad_shape, np.uint8))
    weights = kernel * np.float32(64.0)
    acc: np.ndarray | None = None
    out = _buf("conv_tile", pad_shape, np.int16)
    for oy in range(0, k, block):
        for ox in range(0, k, block):
            part = weights[oy : oy + block, ox : ox + block]
            if not part.any():
                continue
            tile = np.zeros((block, block), np.float32)
            tile[: part.shape[0], : part.shape[1]] = part
            out = cv2.filter2D(padded, cv2.CV_16S, tile, dst=out, borderType=cv2.BORDER_REFLECT_101)
            # tile result at (y, x) = its taps centred on (y, x); the kernel wants them at (y + oy + cb - c, ...),
            # and the padding adds c
            shifted = out[oy + cb : oy + cb + h, ox + cb : ox + cb + w]
            if acc is None:
                acc = _buf("conv_acc", image.shape, np.int16)
                np.copyto(acc, shifted)
            else:
                acc = cv2.add(acc, shifted, dst=acc)
    assert acc is not None, "empty kernel"
    return cv2.convertScaleAbs(acc, alpha=1 / 64)


def _mix(image: np.ndarray, alpha: np.ndarray, color: float) -> np.ndarray:
    """``image`` blended towards the grey level ``color`` by a per-pixel ``alpha`` (H x W or H x W x 3)."""
    shape = image.shape
    img = _buf("mix_img", shape)
    img[...] = image
    if alpha.ndim == 2:  # numpy broadcasting of an (H, W, 1) array is 3x slower than a merged copy
        alpha = cv2.merge([alpha, alpha, alpha], dst=_buf("mix_alpha", shape))
    diff = np.subtract(np.float32(color), img, out=_buf("mix_diff", shape))
    diff *= alpha
    img += diff
    return cv2.convertScaleAbs(img)


def _haze(image: np.ndarray, transmission: np.ndarray | float, airlight: float) -> np.ndarray:
    """Koschmieder's law I = J t + A (1 - t): light scattered by fog, rain or snow veils the scene. An array
    ``transmission`` is overwritten."""
    if isinstance(transmission, np.ndarray):
        np.subtract(np.float32(1.0), transmission, out=transmission)
        return _mix(image, transmission, airlight * 255.0)
    return cv2.convertScaleAbs(image, alpha=transmission, beta=airlight * 255.0 * (1.0 - transmission))


def _albu(key: tuple[Any, ...], build: Callable[[], A.BasicTransform], image: np.ndarray, seed: int) -> np.ndarray:
    """Apply the transform ``build`` makes, seeded. It is built once per ``key`` (which must name every
    parameter) and per thread: re-seeding one instance from two threads at once would mix their states."""
    cache: dict[tuple[Any, ...], A.Compose] = _LOCAL.__dict__.setdefault("transforms", {})
    compose = cache.get(key)
    if compose is None:
        compose = cache[key] = A.Compose([build()], seed=seed)
    compose.set_random_seed(seed)
    return compose(image=image)["image"]


# --------------------------------------------------------------------------------------------------------------
# the conditions: each takes (image, level, seed, key) where level is the fixed parameter set of a severity


@dataclass(frozen=True)
class _LowLight:
    electrons: float  # photo-electrons a white pixel collects: fewer photons, more relative shot noise
    brightness: float  # linear level the camera's auto-gain renders white at (it cannot fully compensate)


_READ_NOISE_E = 3.0  # sensor read noise, electrons (typical small CMOS sensor)


def _low_light(image: np.ndarray, level: _LowLight, seed: int, key: tuple[str, int]) -> np.ndarray:
    """Poisson-Gaussian sensor model in linear light: shot noise grows as sqrt(signal), read noise is fixed,
    then the auto-gain amplifies both."""
    rng = np.random.default_rng(seed)
    signal = cv2.LUT(image, _TO_LINEAR, dst=_buf("signal", image.shape))
    signal *= np.float32(level.electrons)
    sigma = np.add(signal, np.float32(_READ_NOISE_E**2), out=_buf("sigma", image.shape))
    sigma = cv2.sqrt(sigma, dst=sigma)
    sigma *= _gauss(rng, image.shape)
    signal += sigma
    signal *= np.float32(level.brightness / level.electrons)
    return _to_srgb_u8(signal)


@dataclass(frozen=True)
class _IrNight:
    contrast: float  # scene contrast kept: IR reflectance flattens what colour separated
    vignette: float  # fall-off of the IR illuminator towards the corners (0: even lighting)
    noise: float  # sensor noise sigma, grey levels
    blur: float  # Gaussian sigma, px at 640x480: lenses focused for visible light are soft in near-IR


def _ir_night(image: np.ndarray, level: _IrNight, seed: int, key: tuple[str, int]) -> np.ndarray:
    """What a day/night camera shows with its IR-cut filter out and its IR LEDs on: one grey channel."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    # near-IR reflectance follows red more than blue (foliage and skin come out bright)
    grey = cv2.transform(image, np.array([[0.15, 0.3, 0.55]], np.float32)).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), level.blur * _scale(image))
    mean = float(grey.mean())
    grey = (grey - mean) * np.float32(level.contrast) + np.float32(mean)
    ys = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (h / 2)
    xs = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (w / 2)
    radius2 = (ys[:, None] ** 2 + xs[None, :] ** 2) / 2.0  # 0 in the centre, 1 in the corners
    grey *= np.float32(1.0) - np.float32(level.vignette) * radius2
    grey += _gauss(rng, (h, w), "gauss_grey") * np.float32(level.noise)
    return cv2.cvtColor(cv2.convertScaleAbs(grey), cv2.COLOR_GRAY2BGR)


@dataclass(frozen=True)
class _Fog:
    visibility: float  # mean transmission exp(-beta d) of the scene: 1 = clear air
    airlight: float  # brightness of the fog itself (0..1)


def _fog(image: np.ndarray, level: _Fog, seed: int, key: tuple[str, int]) -> np.ndarray:
    """Koschmieder haze whose density varies smoothly over the frame (fog comes in banks)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    density = _smooth_noise(rng, h, w)  # optical depth beta * d, d = 1 +- 35 %
    beta = -math.log(level.visibility)
    density *= np.float32(-0.35 * beta)
    density -= np.float32(beta)
    return _haze(image, cv2.exp(density, dst=density), level.airlight)


@dataclass(frozen=True)
class _Rain:
    streaks: float  # rain streaks per image column (each ~1/10 of the image high): density, whatever the size
    drop_width: int  # streak width, px at 640x480
    blur: int  # box blur of the streaks, px at 640x480 (drops close to the lens are out of focus)
    brightness: float  # overcast dimming
    transmission: float  # rain haze: heavy rain scatters light like a thin fog


def _rain(image: np.ndarray, level: _Rain, seed: int, key: tuple[str, int]) -> np.ndarray:
    """albumentations' rain rendering (grey streaks, blurred, added; the scene dimmed) with the streak count
    set per image width: RandomRain's count follows the height only, so wide frames would get sparser rain."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    s = _scale(image)
    length = max(2, h // 10)
    count = max(1, round(level.streaks * w))
    drops = np.stack([rng.integers(0, w, count), rng.integers(0, max(1, h - length), count)], 1).astype(np.int32)
    streaks = fpixel.add_rain(image, slant=float(rng.uniform(-0.15, 0.15) * length), drop_length=length,
                              drop_width=max(1, round(level.drop_width * s)), drop_color=(200, 200, 200),
                              blur_value=max(1, round(level.blur * s)), brightness_coefficient=level.brightness,
                              rain_drops=drops)
    return _haze(streaks, level.transmission, 0.75)


@dataclass(frozen=True)
class _Snow:
    flakes: float  # share of pixels that start a small (far) flake
    big_flakes: float  # share of quarter-resolution cells that start a large, out-of-focus near flake
    fall: int  # vertical streak length of falling flakes during the exposure, px at 640x480
    transmission: float  # snowfall haze


def _snow(image: np.ndarray, level: _Snow, seed: int, key: tuple[str, int]) -> np.ndarray:
    """Two layers of flakes (small far ones, large blurred near ones) smeared by their fall, over a haze."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    s = _scale(image)
    # small flakes: single pixels at 640x480, a few pixels wide after the blur; drawn at 640x480 density
    hs, ws = max(1, round(h / s)), max(1, round(w / s))
    small = rng.random((hs, ws), dtype=np.float32, out=_buf("snow_random", (hs, ws)))
    _, small = cv2.threshold(small, level.flakes, 4.0, cv2.THRESH_BINARY_INV, dst=small)  # 4: a flake starts
    small = cv2.GaussianBlur(small, (0, 0), 0.8, dst=small)
    if (hs, ws) != (h, w):
        small = cv2.resize(small, (w, h), dst=_buf("snow_small", (h, w)), interpolation=cv2.INTER_LINEAR)
    hq, wq = max(1, round(h / (4 * s))), max(1, round(w / (4 * s)))
    big = (rng.random((hq, wq), dtype=np.float32) < level.big_flakes).astype(np.float32) * np.float32(5.0)
    big = cv2.resize(big, (w, h), dst=_buf("snow_big", (h, w)), interpolation=cv2.INTER_LINEAR)
    big = cv2.GaussianBlur(big, (0, 0), 2.0 * s, dst=big)
    big += small
    alpha = cv2.blur(big, (1, max(1, round(level.fall * s))), dst=_buf("snow_alpha", (h, w)))
    np.clip(alpha, 0.0, 0.95, out=alpha)
    return _mix(_haze(image, level.transmission, 0.8), alpha, 245.0)


@dataclass(frozen=True)
class _Glare:
    radius: float  # half-intensity radius of the bloom around the source, share of the image diagonal
    veil: float  # veiling glare: stray light added everywhere by the lens (share of white)
    ghosts: int  # lens-flare ghosts along the line through the image centre


_GLARE_TINT = np.array([0.85, 0.95, 1.0], np.float32)  # BGR: warm sun / halogen headlight


def _glare(image: np.ndarray, level: _Glare, seed: int, key: tuple[str, int]) -> np.ndarray:
    """A light source in view: saturated core, bloom falling off as 1/r^2, uniform veiling glare and lens
    ghosts, screen-blended (light adds, never darkens). The source sits anywhere in the central 80%."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    # the bloom is smooth: compute it at 1/4 resolution
    hs, ws = max(1, h // 4), max(1, w // 4)
    ys = (np.arange(hs, dtype=np.float32) + 0.5) * (h / hs) - cy
    xs = (np.arange(ws, dtype=np.float32) + 0.5) * (w / ws) - cx
    r0 = level.radius * math.hypot(h, w)
    r2 = (ys[:, None] ** 2 + xs[None, :] ** 2) / np.float32(r0 * r0)
    light = np.float32(1.0) / (np.float32(1.0) + r2)  # 1 at the core, 1/2 at r0, ~ 1/r^2 further out
    light = cv2.resize(light * np.float32(1.6), (w, h), dst=_buf("glare_light", (h, w)),
                       interpolation=cv2.INTER_LINEAR)
    ghosts = _buf("glare_ghosts", (h, w))
    ghosts.fill(0.0)
    for _ in range(level.ghosts):  # ghosts lie on the line from the source through the optical centre
        t = rng.uniform(-1.2, 0.8)
        gx, gy = w / 2 + t * (cx - w / 2), h / 2 + t * (cy - h / 2)
        radius = max(2, int(rng.uniform(0.01, 0.05) * math.hypot(h, w)))
        cv2.circle(ghosts, (int(gx), int(gy)), radius, float(rng.uniform(0.08, 0.2)), -1, cv2.LINE_AA)
    ghosts = cv2.GaussianBlur(ghosts, (0, 0), 3.0 * _scale(image), dst=ghosts)
    light += ghosts
    light += np.float32(level.veil)
    np.clip(light, 0.0, 1.0, out=light)
    flare = cv2.merge([light, light, light], dst=_buf("glare_flare", image.shape))
    flare *= _GLARE_TINT
    return _mix(image, flare, 255.0)  # screen blend: 1 - (1 - image)(1 - flare)


def _motion_blur(image: np.ndarray, length: int, seed: int, key: tuple[str, int]) -> np.ndarray:
    """A straight blur of fixed length (px at 640x480) in a seed-chosen direction: the camera shakes or the
    subject moves during the exposure. The kernel is albumentations' (centred: a shifted kernel would move
    the image off its ground-truth boxes); the convolution is :func:`_convolve` (albumentations' filter2D
    takes 12-15 ms for lengths over 11)."""
    size = _odd(length * _scale(image))
    transforms: dict[int, A.MotionBlur] = _LOCAL.__dict__.setdefault("motion", {})
    blur = transforms.get(size)
    if blur is None:
        blur = transforms[size] = A.MotionBlur(blur_limit=(size, size), allow_shifted=False, angle_range=(0, 180),
                                               direction_range=(0.0, 0.0), p=1.0)
    blur.set_random_seed(seed)
    return _convolve(image, blur.get_params()["kernel"])


_DEFOCUS_KERNELS: dict[float, np.ndarray] = {}


def _disk(radius: float) -> np.ndarray:
    """albumentations' Defocus kernel: a uniform disk softened by a small Gaussian (aperture anti-aliasing),
    cut to its support."""
    kernel = _DEFOCUS_KERNELS.get(radius)
    if kernel is None:
        half = math.ceil(radius) + 1
        axis = np.arange(-half, half + 1, dtype=np.float32)
        disk = (axis[None, :] ** 2 + axis[:, None] ** 2 <= radius * radius).astype(np.float32)
        kernel = cv2.GaussianBlur(disk / disk.sum(), (3, 3), 0.5)
        kernel = _DEFOCUS_KERNELS.setdefault(radius, kernel / kernel.sum())
    return kernel


def _defocus(image: np.ndarray, radius: float, seed: int, key: tuple[str, int]) -> np.ndarray:
    """Out-of-focus lens: disk blur of a fixed radius (px at 640x480). Wide disks remove all detail finer
    than the disk, so they are applied at a reduced scale (same result, a fraction of the cost) and scaled
    back."""
    h, w = image.shape[:2]
    radius = max(1.0, radius * _scale(image))
    factor = max(1, round(radius / 2.5))
    if factor == 1:
        return cv2.filter2D(image, -1, _disk(round(radius, 2)), borderType=cv2.BORDER_REFLECT_101)
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    small = cv2.filter2D(small, -1, _disk(round(radius / factor, 2)), borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(image: np.ndarray, quality: int, seed: int, key: tuple[str, int]) -> np.ndarray:
    # BGR in on purpose: ImageCompression encodes with cv2.imencode, which expects BGR
    return _albu(key, lambda: A.ImageCompression(compression_type="jpeg", quality_range=(quality, quality),
                                                 p=1.0), image, seed)


def _h264(image: np.ndarray, qp: int, seed: int, key: tuple[str, int]) -> np.ndarray:
    """Encode the image as one H.264 intra frame at a fixed quantiser with libx264 and decode it back: real
    codec artefacts (4:2:0 chroma, blocking, smoothed texture, deblocking as cameras' encoders do)."""
    h, w = image.shape[:2]
    ph, pw = h + h % 2, w + w % 2  # 4:2:0 needs even dimensions
    src = image if (ph, pw) == (h, w) else cv2.copyMakeBorder(image, 0, ph - h, 0, pw - w, cv2.BORDER_REPLICATE)
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = pw, ph, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 25)
    # ultrafast turns the deblocking filter off, which no camera does; threads=1 keeps output deterministic
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "qp": str(qp), "deblock": "0:0",
                       "threads": "1"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(src), format="bgr24").reformat(format="yuv420p")
    frame.pts = 0
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    decoder = av.CodecContext.create("h264", "r")
    decoded = [f for p in [*packets, None] for f in decoder.decode(p)]
    if not decoded:
        raise RuntimeError("H.264 round trip produced no frame")
    out = decoded[0].to_ndarray(format="bgr24")
    return out[:h, :w] if (ph, pw) != (h, w) else out


def _low_resolution(image: np.ndarray, factor: int, seed: int, key: tuple[str, int]) -> np.ndarray:
    """A distant subject or a low-resolution stream: area-average down by ``factor`` (what a coarser sensor
    integrates), then bilinear back up to the original size."""
    h, w = image.shape[:2]
    scale = max(1.0 / factor, 1.0 / min(h, w))  # never below one pixel
    interpolation = {"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}
    return _albu((*key, scale), lambda: A.Downscale(scale_range=(scale, scale), interpolation_pair=interpolation,
                                                    p=1.0), image, seed)


@dataclass(frozen=True)
class _Spec:
    summary: str
    parameter: str  # how describe() names the per-severity levels
    levels: tuple[Any, ...]  # one per severity
    apply: Callable[[np.ndarray, Any, int, tuple[str, int]], np.ndarray]
    show: Callable[[Any], str] = str


_SPECS: dict[str, _Spec] = {
    "low_light": _Spec(
        "dusk/night without IR: darker image, shot + read sensor noise amplified by the auto-gain",
        "photo-electrons at white / output white level",
        (_LowLight(400, 0.45), _LowLight(150, 0.3), _LowLight(60, 0.2), _LowLight(25, 0.13), _LowLight(10, 0.08)),
        _low_light, lambda v: f"{v.electrons:g} e-/{v.brightness:g}"),
    "ir_night": _Spec(
        "IR night vision: monochrome, flat contrast, illuminator fall-off, sensor noise, soft near-IR focus",
        "contrast kept / noise sigma",
        (_IrNight(0.8, 0.4, 3, 0.6), _IrNight(0.66, 0.45, 5, 0.8), _IrNight(0.54, 0.5, 7, 1.0),
         _IrNight(0.45, 0.55, 9, 1.2), _IrNight(0.36, 0.6, 11, 1.4)),
        _ir_night, lambda v: f"{v.contrast:g}/{v.noise:g}"),
    "fog": _Spec(
        "fog: uneven contrast-reducing haze (Koschmieder), grey-white airlight",
        "mean transmission",
        (_Fog(0.6, 0.8), _Fog(0.45, 0.8), _Fog(0.32, 0.82), _Fog(0.2, 0.84), _Fog(0.12, 0.85)),
        _fog, lambda v: f"{v.visibility:g}"),
    "rain": _Spec(
        "rain: slanted streaks (albumentations' rain rendering), overcast dimming, rain haze",
        "streaks per image column / haze transmission",
        (_Rain(0.2, 1, 3, 0.9, 0.95), _Rain(0.4, 1, 3, 0.85, 0.9), _Rain(0.75, 1, 3, 0.8, 0.82),
         _Rain(1.3, 1, 3, 0.75, 0.72), _Rain(2.0, 2, 5, 0.7, 0.6)),
        _rain, lambda v: f"{v.streaks:g}/{v.transmission:g}"),
    "snow": _Spec(
        "snowfall: small far and large out-of-focus near flakes smeared by their fall, snow haze",
        "flake density",
        (_Snow(0.002, 0.004, 5, 0.92), _Snow(0.004, 0.01, 7, 0.85), _Snow(0.007, 0.02, 9, 0.75),
         _Snow(0.011, 0.035, 11, 0.65), _Snow(0.016, 0.05, 13, 0.55)),
        _snow, lambda v: f"{v.flakes:g}/{v.big_flakes:g}"),
    "glare": _Spec(
        "sun or headlight in view: saturated bloom (1/r^2), veiling glare, lens ghosts",
        "bloom radius (share of diagonal) / veil",
        (_Glare(0.03, 0.05, 3), _Glare(0.06, 0.1, 4), _Glare(0.1, 0.16, 5), _Glare(0.15, 0.23, 6),
         _Glare(0.22, 0.32, 7)),
        _glare, lambda v: f"{v.radius:g}/{v.veil:g}"),
    "motion_blur": _Spec(
        "camera shake or fast motion: straight blur, random direction", "kernel length px at 640x480",
        (5, 9, 15, 23, 33), _motion_blur),
    "defocus": _Spec("out-of-focus lens: disk blur", "disk radius px at 640x480", (1.5, 2.5, 4, 6, 9), _defocus),
    "jpeg": _Spec("JPEG compression (snapshots, MJPEG streams)", "quality", (30, 20, 14, 9, 5), _jpeg),
    "h264": _Spec("H.264 intra-frame compression (libx264, deblocked)", "QP", (30, 36, 41, 46, 51), _h264),
    "low_resolution": _Spec(
        "low resolution: area down-scaling then bilinear up-scaling to the original size", "scale-down factor",
        (2, 3, 4, 6, 8), _low_resolution),
}
assert tuple(_SPECS) == CONDITIONS


def _spec(condition: str) -> _Spec:
    spec = _SPECS.get(condition)
    if spec is None:
        raise ConditionError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")
    return spec


def corrupt(image: np.ndarray, condition: str, severity: int, seed: int = 0) -> np.ndarray:
    """``image`` (BGR uint8, H x W x 3) under ``condition`` at ``severity`` (1 mild .. 5 severe).

    Same height and width out (boxes stay valid); the same seed gives the same output. The seed places the
    random parts (noise, drops, flakes, the glare source, the blur direction), never the severity.
    """
    spec = _spec(condition)
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ConditionError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a BGR uint8 image (H x W x 3), got {image.dtype} {image.shape}")
    image = np.ascontiguousarray(image)
    seed = int(seed) % 2**64  # numpy and albumentations seeds must not be negative
    out = spec.apply(image, spec.levels[severity - 1], seed, (condition, severity))
    if out.shape != image.shape or out.dtype != np.uint8:  # a broken corruption must not skew a benchmark
        raise AssertionError(f"{condition}: produced {out.dtype} {out.shape} from {image.shape}")
    return out


def describe(condition: str) -> str:
    """One line for the report: what the condition simulates and its parameter from severity 1 to 5."""
    spec = _spec(condition)
    return (f"{condition}: {spec.summary}; {spec.parameter} {spec.show(spec.levels[0])} (severity 1) .. "
            f"{spec.show(spec.levels[-1])} (severity 5)")


def parse_conditions(spec: str | None) -> tuple[str, ...]:
    """``"all"`` → every condition, ``None``/``""``/``"none"`` → none, ``"fog,rain"`` → those (in the order
    given, duplicates dropped)."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return ()
    if spec.strip().lower() == "all":
        return CONDITIONS
    names = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [name for name in names if name not in _SPECS]
    if unknown:
        raise ConditionError(f"unknown condition(s) {', '.join(map(repr, unknown))}; valid: all, none, "
                             f"{', '.join(CONDITIONS)}")
    return tuple(dict.fromkeys(names))
