"""Isosurfaces (model/isosurface.py) and off-grid sampling (model/sampling.py) against analytic fields."""
from __future__ import annotations

import numpy as np
import pytest

from elfscreen.model.isosurface import isosurface
from elfscreen.model.sampling import cell_plane, resample, saddle_plane, slice_values, trilinear


def frac_grid(shape) -> np.ndarray:
    """Fractional coordinates (N1, N2, N3, 3) of the grid nodes."""
    return np.stack(np.meshgrid(*(np.arange(n) / n for n in shape), indexing="ij"), axis=-1)


def ball(lattice: np.ndarray, shape, centre_frac, radius: float) -> np.ndarray:
    """radius − (periodic distance to the centre): ≥ 0 inside a ball, the surface at 0 a sphere."""
    d = frac_grid(shape) - np.asarray(centre_frac)
    d -= np.round(d)  # the nearest image (fine for these near-cubic cells)
    return radius - np.linalg.norm(d @ lattice, axis=-1)


def closed(triangles: np.ndarray) -> bool:
    """Every edge is shared by exactly two triangles."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


@pytest.mark.parametrize("centre", [[0.51, 0.49, 0.505], [0.003, 0.997, 0.002]], ids=["inside", "on-a-corner"])
def test_sphere_radius_area_normals(centre):
    """A sphere of radius 3 Å in a 10 Å cell at 0.2 Å spacing; centred on a corner it is cut into eight
    pieces by the cell faces, which still add up to the whole sphere."""
    lattice, shape, radius = np.eye(3) * 10.0, (50, 50, 50), 3.0
    mesh = isosurface(ball(lattice, shape, centre, radius), lattice, 0.0)
    voxel = 10.0 / 50
    rel = mesh.vertices - np.asarray(centre) @ lattice
    rel -= np.round(rel / 10.0) * 10.0
    r = np.linalg.norm(rel, axis=1)
    assert np.abs(r - radius).max() < voxel
    assert mesh.area() == pytest.approx(4 * np.pi * radius**2, rel=0.01)
    assert (mesh.vertices >= -1e-9).all() and (mesh.vertices <= 10.0 + 1e-9).all()  # one cell
    assert np.einsum("ij,ij->i", mesh.normals, rel).min() > 0  # outward: down the field
    assert np.allclose(np.linalg.norm(mesh.normals, axis=1), 1.0)
    v = mesh.vertices[mesh.triangles]
    facing = np.einsum("ij,ij->i", np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), rel[mesh.triangles].mean(axis=1))
    assert (facing > 0).all()  # counter-clockwise seen from outside
    if centre[0] > 0.1:
        assert closed(mesh.triangles)  # the whole sphere, in one piece


def test_planes_across_the_boundary_of_a_triclinic_cell():
    """cos 2πx₁ ≥ 0 is a slab around x₁ = 0 that wraps over the cell face; its two faces are planes of
    constant x₁ with the area of the (a₂, a₃) face each."""
    lattice = np.array([[3.0, 0.0, 0.0], [0.8, 2.7, 0.0], [0.4, 0.5, 3.3]])
    shape = (25, 18, 21)
    mesh = isosurface(np.cos(2 * np.pi * frac_grid(shape)[..., 0]), lattice, 0.0)
    frac = mesh.vertices @ np.linalg.inv(lattice)
    assert np.allclose(np.minimum(np.abs(frac[:, 0] - 0.25), np.abs(frac[:, 0] - 0.75)), 0, atol=1 / 25)
    assert mesh.area() == pytest.approx(2 * np.linalg.norm(np.cross(lattice[1], lattice[2])), rel=1e-9)


def test_no_surface_outside_the_range():
    values = np.random.default_rng(0).random((6, 7, 8))
    assert len(isosurface(values, np.eye(3) * 4, 1.5).triangles) == 0
    with pytest.raises(ValueError):
        isosurface(np.zeros((1, 4, 4)), np.eye(3), 0.5)


def test_trilinear_is_exact_on_nodes_periodic_and_linear_between():
    values = np.random.default_rng(1).random((5, 6, 7))
    nodes = frac_grid(values.shape)
    assert np.allclose(trilinear(values, nodes), values)
    assert np.allclose(trilinear(values, nodes + [1, -2, 3]), values)
    halfway = trilinear(values, np.array([0.5 / 5, 0.0, 0.0]))
    assert halfway == pytest.approx((values[0, 0, 0] + values[1, 0, 0]) / 2)
    assert resample(values, (10, 12, 14))[::2, ::2, ::2] == pytest.approx(values)


def test_saddle_plane_of_an_analytic_saddle():
    """f = cos 2πx + cos 2πy + cos 2πz has a bond saddle at (½, 0, 0): it rises along x (towards the
    maxima at x = 0 and 1) and falls along y and z. The slice through it in the plane found shows the
    saddle: a minimum along u, a maximum along v."""
    lattice = np.diag([3.0, 3.2, 3.4])
    shape = (24, 24, 24)
    values = np.cos(2 * np.pi * frac_grid(shape)).sum(axis=-1)
    plane = saddle_plane(values, lattice, np.array([0.5, 0.0, 0.0]))
    assert plane.kind == "bond"
    assert abs(plane.u @ [1, 0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert abs(plane.v @ [0, 0, 1]) == pytest.approx(1.0, abs=1e-6)  # z is the softer fall (longer axis)
    assert plane.origin == pytest.approx([1.5, 0.0, 0.0])
    n = 41
    cut = slice_values(values, lattice, plane, 1.0, n)
    centre = cut[n // 2, n // 2]
    assert centre == pytest.approx(1.0, abs=0.02)
    assert cut[n // 2, [0, -1]].min() > centre and cut[[0, -1], n // 2].max() < centre
    xy, distance = plane.to_plane(np.array([[1.5, 0.0, 0.5]]))
    assert xy[0] == pytest.approx([0.0, 0.5 * (plane.v @ [0, 0, 1])]) and distance[0] == pytest.approx(0.0)


def test_cell_plane_is_the_ab_plane_through_the_centre():
    lattice = np.array([[3.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.5, 0.5, 4.0]])
    plane = cell_plane(lattice)
    assert plane.origin == pytest.approx(lattice.sum(axis=0) / 2)
    assert plane.u == pytest.approx([1, 0, 0]) and plane.v == pytest.approx([0, 1, 0])
