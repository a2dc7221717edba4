"""How a face is drawn, part 1: the orthographic ray caster, the head frame and the light.

Everything is vectorised over (N, H, W) in float32; image units ``u, v`` span [-1, 1]. Per-pixel
maps are (N, H, W) float32, images (3, N, H, W) float32 (channel first, so that a per-image colour
(3, N, 1, 1) and a per-pixel weight (N, H, W) broadcast without strides).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from securegaze.data.synthetic.faces import FaceParams
from securegaze.data.synthetic.layout import HEAD_CENTRE_Y, LIGHT_WRAP
from securegaze.geometry import pitchyaw_to_rotation, rotation_z


def col(values) -> np.ndarray:
    """(N,) -> (N, 1, 1) float32, to broadcast per-image scalars over (N, H, W) maps."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def rgb_col(values) -> np.ndarray:
    """(N, 3) -> (3, N, 1, 1) float32, to broadcast per-image colours over (3, N, H, W) images."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32).T)[:, :, None, None]


def clamp(x: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """np.clip for float maps, in place on ``x`` (pass a temporary). Several times faster than
    np.clip, which matters at a few dozen clamps per face."""
    np.maximum(x, low, out=x)
    np.minimum(x, high, out=x)
    return x


def blend(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> None:
    """In place: image (3, N, H, W) <- image + alpha * (rgb - image)."""
    image += alpha * (rgb - image)


def linear_map(coef: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """coef (N, 3) -> coef[:, 0] * u + coef[:, 1] * v + coef[:, 2], one full-size add per pixel.

    ``u`` is (..., 1, W) and ``v`` (..., H, 1): the products stay a row and a column.
    """
    return col(coef[:, 0]) * u + (col(coef[:, 1]) * v + col(coef[:, 2]))


def surface_z(x: np.ndarray, y: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Depth (negative: towards the camera) of the front of the head ellipsoid at head (x, y)."""
    inside = 1.0 - (x / axes[:, 0]) ** 2 - (y / axes[:, 1]) ** 2
    return -axes[:, 2] * np.sqrt(np.maximum(inside, 1e-3))


@dataclass(frozen=True)
class HeadFrame:
    """Per-image camera <-> head transform of one chunk: p_cam = scale * R @ p_head + offset."""

    rotation: np.ndarray  # (N, 3, 3) float64, camera from head
    scale: np.ndarray  # (N,)
    offset: np.ndarray  # (N, 2) image units (head centre in the image)
    pixel: float  # image units per pixel

    @staticmethod
    def build(p: FaceParams, size: int) -> HeadFrame:
        pose = p.head_pose.astype(np.float64)
        rotation = pitchyaw_to_rotation(pose[:, :2]) @ rotation_z(pose[:, 2])
        offset = p.head_offset.astype(np.float64) + np.array([0.0, HEAD_CENTRE_Y])
        return HeadFrame(rotation, p.head_scale.astype(np.float64), offset, 2.0 / size)

    @property
    def view(self) -> np.ndarray:
        """(N, 3): the camera's viewing direction (+z) in head coordinates."""
        return self.rotation[:, 2, :]

    @property
    def px_per_unit(self) -> np.ndarray:
        """(N,): pixels per head unit."""
        return self.scale / self.pixel

    def ray_origin_coefs(self) -> np.ndarray:
        """(N, 3 coordinates, 3 coefficients): head-frame point where the ray through image (u, v)
        crosses the camera plane, as ``coef[:, k, 0] * u + coef[:, k, 1] * v + coef[:, k, 2]``."""
        inv = self.rotation.transpose(0, 2, 1) / self.scale[:, None, None]
        const = -(inv[:, :, 0] * self.offset[:, :1] + inv[:, :, 1] * self.offset[:, 1:])
        return np.stack([inv[:, :, 0], inv[:, :, 1], const], -1)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) head points -> (N, 2) image units."""
        cam = np.einsum("nij,nj->ni", self.rotation, points.astype(np.float64))
        return cam[:, :2] * self.scale[:, None] + self.offset

    def to_pixels(self, image_xy: np.ndarray) -> np.ndarray:
        """Image units -> pixel coordinates (x right, y down; pixel centres at integers)."""
        return (image_xy + 1.0) / self.pixel - 0.5


@dataclass
class Hit:
    """Where each pixel's ray meets the head ellipsoid (head units; meaningless where inside_px < 0)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray | None = None
    # The hit point on the unit sphere, (x / a, y / b, z / c); the surface normal is q / axes.
    q: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    inside_px: np.ndarray | None = None  # signed distance to the silhouette, pixels (positive inside)
    y_closest: np.ndarray | None = None  # head y of the ray's closest approach to the centre


def cast_ellipsoid(frame: HeadFrame, u, v, axes: np.ndarray, full: bool = True) -> Hit:
    """Intersect the orthographic rays through image points (u, v) with the ellipsoid ``axes`` (N, 3).

    In the space scaled to the unit sphere, a ray's point closest to the centre, w, is linear in
    (u, v); 1 - |w|^2 > 0 inside the silhouette, and the front hit is w - sqrt(1 - |w|^2) e_hat
    with e_hat the unit viewing direction. This is exact and has no cancellation near the
    silhouette (the textbook quadratic loses float32 precision there).
    """
    axes = axes.astype(np.float64)
    origin = frame.ray_origin_coefs() / axes[:, :, None]
    e = frame.view / axes
    e_hat = e / np.linalg.norm(e, axis=1, keepdims=True)
    w_coef = origin - e_hat[:, :, None] * np.einsum("nk,nkc->nc", e_hat, origin)[:, None, :]
    wx, wy, wz = (linear_map(w_coef[:, k], u, v) for k in range(3))
    inside = 1.0 - (wx * wx + wy * wy + wz * wz)
    depth = np.sqrt(np.maximum(inside, 0.0))
    qx = wx - col(e_hat[:, 0]) * depth
    qy = wy - col(e_hat[:, 1]) * depth
    a, b = col(axes[:, 0]), col(axes[:, 1])
    if not full:
        return Hit(qx * a, qy * b)
    qz = wz - col(e_hat[:, 2]) * depth
    c = col(axes[:, 2])
    # 1 - |w|^2 ~ 2 (1 - |w|) near the outline; times the mean in-plane radius: pixels.
    radius_px = 0.5 * (axes[:, 0] + axes[:, 1]) * frame.px_per_unit
    return Hit(qx * a, qy * b, qz * c, (qx, qy, qz), inside * col(0.5 * radius_px), wy * b)


@dataclass(frozen=True)
class Light:
    """One directional light plus ambient, shared by skin, eyes and triggers."""

    head_dir: np.ndarray  # (N, 3) towards the light, head frame
    cam_dir: np.ndarray  # (N, 3) towards the light, camera frame
    ambient: np.ndarray  # (N,)
    rgb: np.ndarray  # (3, N, 1, 1)

    @staticmethod
    def build(p: FaceParams, frame: HeadFrame) -> Light:
        az, el = p.light_angles[:, 0].astype(np.float64), p.light_angles[:, 1].astype(np.float64)
        # Light in front of the face (negative z), from the image's right for positive azimuth and
        # from above (negative y) for positive elevation.
        cam = np.stack([np.sin(az) * np.cos(el), -np.sin(el), -np.cos(az) * np.cos(el)], -1)
        head = np.einsum("nji,nj->ni", frame.rotation, cam)
        return Light(head, cam, p.ambient.astype(np.float64), rgb_col(p.light_rgb))

    def shade(self, n_dot_l):
        """Irradiance factor from the cosine to the light: (N,) or (N, H, W) like ``n_dot_l``."""
        diffuse = np.clip((n_dot_l + LIGHT_WRAP) * (1.0 / (1.0 + LIGHT_WRAP)), 0.0, 1.0) if np.ndim(n_dot_l) < 3 \
            else clamp((n_dot_l + LIGHT_WRAP) * (1.0 / (1.0 + LIGHT_WRAP)))
        amb = col(self.ambient) if np.ndim(n_dot_l) == 3 else self.ambient
        return amb + (1.0 - amb) * diffuse

    def lit(self, albedo) -> np.ndarray:
        """(N, 3) albedo -> (3, N, 1, 1) colour under the light's colour and intensity."""
        return rgb_col(albedo) * self.rgb
