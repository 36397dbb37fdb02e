"""The particle-mesh solver against answers known without it: linear growth, momentum conservation,
periodicity."""
import math

import numpy as np
import pytest
import torch

from cosmodiff.mock import colossus_cosmology
from cosmodiff.parameters import QUIJOTE_FIDUCIAL
from cosmodiff.nbody import Growth, cic_weights, evolve, forces, lpt_initial_conditions, paint, readout

BOX, GRID = 100.0, 16


def lattice_with_mode(amplitude, wavelengths=1):
    """The lattice (at mesh cell centres) and a displacement along x by one sine mode of the box at
    unit growth."""
    q = (np.indices((GRID,) * 3) + 0.5) * (BOX / GRID)
    psi = np.zeros((3, GRID, GRID, GRID))
    psi[0] = amplitude * np.sin(2 * np.pi * wavelengths * q[0] / BOX)
    return q.reshape(3, -1), psi


def test_a_long_wavelength_mode_grows_with_the_linear_growth_factor_in_a_few_steps():
    growth = Growth(colossus_cosmology(QUIJOTE_FIDUCIAL))
    q, psi = lattice_with_mode(0.05)
    positions, momenta = lpt_initial_conditions(psi, np.zeros_like(psi), growth, 0.1, BOX)
    final, _ = evolve(positions, momenta, growth, list(np.linspace(0.1, 1.0, 5)), GRID, BOX)
    displacement = torch.remainder(final - torch.from_numpy(q) + BOX / 2, BOX) - BOX / 2
    expected = torch.from_numpy(psi.reshape(3, -1))  # D(1) = 1
    assert (displacement - expected).abs().max() < 0.01 * expected.abs().max()
    growth_ratio = growth.growth(1.0) / growth.growth(0.1)
    assert 7 < growth_ratio < 8.5  # what makes the test able to fail: the mode grew from 1/7.8 of its size


def test_the_total_force_is_zero_and_momentum_is_conserved():
    growth = Growth(colossus_cosmology(QUIJOTE_FIDUCIAL))
    generator = torch.Generator().manual_seed(0)
    positions = torch.rand(3, 2000, generator=generator, dtype=torch.float64) * BOX
    force = forces(positions, 32, BOX, 0.5, growth.omega_m)
    assert force.sum(dim=1).abs().max() < 1e-9 * force.abs().sum(dim=1).max()
    momenta = torch.zeros_like(positions)
    _, final_momenta = evolve(positions, momenta, growth, [0.5, 0.7, 1.0], 32, BOX)
    assert final_momenta.abs().sum() > 0
    assert final_momenta.sum(dim=1).abs().max() < 1e-9 * final_momenta.abs().sum(dim=1).max()


def test_gravity_wraps_around_the_box():
    growth = Growth(colossus_cosmology(QUIJOTE_FIDUCIAL))
    pair = torch.tensor([[1.0, BOX - 1.0], [50.0, 50.0], [50.0, 50.0]], dtype=torch.float64)
    force = forces(pair, 32, BOX, 1.0, growth.omega_m)
    assert force[0, 0] < 0 < force[0, 1]  # each pulled towards the other across the boundary x = 0
    generator = torch.Generator().manual_seed(1)
    positions = torch.rand(3, 500, generator=generator, dtype=torch.float64) * BOX
    shift = torch.tensor([[3 * BOX / 32], [-5 * BOX / 32], [0.0]], dtype=torch.float64)  # whole mesh cells
    torch.testing.assert_close(forces(torch.remainder(positions + shift, BOX), 32, BOX, 1.0, growth.omega_m),
                               forces(positions, 32, BOX, 1.0, growth.omega_m), rtol=1e-6, atol=1e-9)
    moved, _ = evolve(torch.remainder(positions + shift, BOX), torch.zeros_like(positions), growth, [0.5, 1.0], 32, BOX)
    unmoved, _ = evolve(positions, torch.zeros_like(positions), growth, [0.5, 1.0], 32, BOX)
    difference = torch.remainder(moved - unmoved - shift + BOX / 2, BOX) - BOX / 2
    assert difference.abs().max() < 1e-6 * BOX and not math.isnan(difference.sum().item())


def test_cloud_in_cell_spreads_a_particle_over_its_eight_nodes_across_the_periodic_edge():
    cell = BOX / GRID
    # one particle a quarter cell past the last node on x, half a cell past node 2 on y, on node 5 on z;
    # one just below 0, whose remainder rounds up to the box in single precision: on node 0
    positions = torch.tensor([[(GRID - 1 + 0.25) * cell, -1e-6], [2.5 * cell, 0.0], [5 * cell, 0.0]])
    assert torch.remainder(positions[0, 1] / cell, GRID) == GRID  # the rounding the second particle exercises
    pairs = cic_weights(positions, GRID, BOX)
    weights = {}
    for index, weight in pairs:
        for particle in range(2):
            key = (particle, int(index[particle]))
            weights[key] = weights.get(key, 0.0) + float(weight[particle])
    node = lambda x, y, z: (x * GRID + y) * GRID + z  # noqa: E731
    expected = {node(GRID - 1, 2, 5): 0.75 * 0.5, node(GRID - 1, 3, 5): 0.75 * 0.5,
                node(0, 2, 5): 0.25 * 0.5, node(0, 3, 5): 0.25 * 0.5}
    assert {key[1]: value for key, value in weights.items() if key[0] == 0 and value > 0} == pytest.approx(expected)
    assert {key[1]: value for key, value in weights.items() if key[0] == 1 and value > 0} == {0: 1.0}
    mesh = paint(pairs, GRID, 2).reshape(-1)
    assert float(mesh.sum()) == pytest.approx(0.0, abs=1e-9)  # overdensity: mean zero
    field = torch.arange(GRID ** 3, dtype=torch.float32)
    assert readout(pairs, field).tolist() == pytest.approx([sum(float(field[i]) * w for i, w in expected.items()), 0.0])
