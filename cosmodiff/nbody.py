"""Particle-mesh N-body gravity with FastPM's kick and drift factors (Feng et al. 2016), in torch.

Units: comoving positions x in Mpc/h, time a, H0 = 1, canonical momentum p = a^3 E(a) dx/da, so

    dx/da = p / (a^3 E),    dp/da = F / (a E),    F = -grad phi,    lap phi = 3/2 Omega_m delta / a.

A kick from a0 to a1 with the force at a_r adds F (G_p(a1) - G_p(a0)) / G_f(a_r) to p, and a drift
adds p (D(a1) - D(a0)) / G_p(a_r) to x, with G_p = a^3 E dD/da and G_f = 3/2 Omega_m D / a: the
factors that make each step exact for the linear growing mode, so a few steps keep the large
scales right. The force is the gradient of the potential of the cloud-in-cell density on a periodic
mesh (`force_mesh` cells per particle spacing), computed by FFT with the CIC window divided out once
for painting and once for reading the force back at the particles; the total force is zero to
rounding, so momentum is conserved.

No maintained library fits: jaxpm (JAX) and pmesh/fastpm-python (MPI and compiled extensions) would
add a second array stack to install, while torch is already a dependency and runs the mesh FFTs on
CPU or GPU; the speed is measured by benchmarks/mock_validation.py.
"""
import math

import numpy as np
import torch


class Growth:
    """Linear growth D(a) (1 at a = 1), dD/da and E(a) = H/H0 of a colossus cosmology."""

    def __init__(self, cosmology):
        self.cosmology = cosmology
        self.omega_m = cosmology.Om0

    def factors(self, a):
        z = 1 / a - 1
        growth = float(self.cosmology.growthFactor(z))
        growth_rate = -float(self.cosmology.growthFactor(z, derivative=1)) / a ** 2  # dD/da = -dD/dz / a^2
        return growth, growth_rate, float(self.cosmology.Ez(z))

    def drift_factor(self, a):
        """G_p(a) = a^3 E dD/da: the momentum of a unit linear displacement."""
        _, growth_rate, hubble = self.factors(a)
        return a ** 3 * hubble * growth_rate

    def kick_factor(self, a):
        """G_f(a) = 3/2 Omega_m D / a: the force on a unit linear displacement."""
        return 1.5 * self.omega_m * self.factors(a)[0] / a

    def growth(self, a):
        return self.factors(a)[0]


def mesh_wavenumbers(mesh, box_size, like):
    """k (h/Mpc) along each axis, broadcastable over torch's rfftn layout, on the device and in the
    precision of the tensor `like`."""
    k = torch.fft.fftfreq(mesh, d=box_size / mesh, device=like.device, dtype=like.dtype) * 2 * math.pi
    k_half = torch.fft.rfftfreq(mesh, d=box_size / mesh, device=like.device, dtype=like.dtype) * 2 * math.pi
    return k.view(-1, 1, 1), k.view(1, -1, 1), k_half.view(1, 1, -1)


def gradient_wavenumbers(mesh, box_size, like):
    """mesh_wavenumbers with the Nyquist component of each axis set to 0: an odd gradient kernel, so
    the total force is exactly zero."""
    return [torch.where(k.abs() >= math.pi * mesh / box_size - 1e-9, torch.zeros_like(k), k)
            for k in mesh_wavenumbers(mesh, box_size, like)]


def cic_weights(positions, mesh, box_size):
    """The 8 (flat index, weight) pairs of each particle's cloud-in-cell footprint on a periodic mesh.
    Each axis' two nodes and weights are formed once and combined per corner: the N-body steps spend
    most of their time here and in readout."""
    cell = torch.remainder(positions / (box_size / mesh), mesh)
    base = torch.floor(cell).clamp_(max=mesh - 1)  # a remainder rounded up to mesh: all its weight on node 0
    frac = cell - base
    base = base.long()
    up = base + 1
    up.masked_fill_(up == mesh, 0)
    nodes = [(base[axis], up[axis]) for axis in range(3)]
    weights = [(1 - frac[axis], frac[axis]) for axis in range(3)]
    pairs = []
    for x in (0, 1):
        for y in (0, 1):
            row, row_weight = (nodes[0][x] * mesh + nodes[1][y]) * mesh, weights[0][x] * weights[1][y]
            pairs += [(row + nodes[2][z], row_weight * weights[2][z]) for z in (0, 1)]
    return pairs


def deposit(pairs, counts):
    """Add CIC pairs' weights to a flat mesh of particles per node (counts, (mesh^3,)): the one CIC
    painter of the package (N-body forces, the mocks, Gadget snapshots); returns counts."""
    for index, weight in pairs:
        counts.index_add_(0, index, weight)
    return counts


def paint(pairs, mesh, n_particles):
    """Overdensity delta on the mesh from CIC pairs (mean density: n_particles / mesh^3)."""
    density = deposit(pairs, torch.zeros(mesh ** 3, dtype=pairs[0][1].dtype, device=pairs[0][1].device))
    return (density * (mesh ** 3 / n_particles) - 1).view(mesh, mesh, mesh)


def readout(pairs, field):
    """A mesh field interpolated at the particles with the same CIC weights."""
    flat = field.reshape(-1)
    total = torch.zeros(pairs[0][1].shape, dtype=torch.promote_types(flat.dtype, pairs[0][1].dtype), device=flat.device)
    for index, weight in pairs:
        total += torch.index_select(flat, 0, index) * weight
    return total


def cic_window(mesh, like):
    """The CIC assignment window in Fourier space, on the rfftn layout."""
    def sinc(k):
        return torch.sinc(k / mesh)  # torch.sinc(x) = sin(pi x) / (pi x): index k over mesh cells
    index = torch.fft.fftfreq(mesh, d=1 / mesh, device=like.device, dtype=like.dtype)
    index_half = torch.fft.rfftfreq(mesh, d=1 / mesh, device=like.device, dtype=like.dtype)
    return (sinc(index.view(-1, 1, 1)) * sinc(index.view(1, -1, 1)) * sinc(index_half.view(1, 1, -1))) ** 2


def forces(positions, mesh, box_size, a, omega_m):
    """-grad phi (3, M) at the particles, lap phi = 3/2 Omega_m delta / a, by FFT on a periodic mesh."""
    pairs = cic_weights(positions, mesh, box_size)
    delta_k = torch.fft.rfftn(paint(pairs, mesh, positions.shape[1]))
    k2 = sum(k ** 2 for k in mesh_wavenumbers(mesh, box_size, positions))
    k2[0, 0, 0] = 1.0
    potential = -1.5 * omega_m / a * delta_k / k2 / cic_window(mesh, positions) ** 2
    potential[0, 0, 0] = 0
    shape = (mesh,) * 3
    return torch.stack([readout(pairs, torch.fft.irfftn(-1j * k * potential, s=shape))
                        for k in gradient_wavenumbers(mesh, box_size, positions)])


def evolve(positions, momenta, growth, a_steps, mesh, box_size, progress=None):
    """Kick-drift-kick leapfrog through the scale factors a_steps (positions and momenta in the units
    of the module docstring, (3, M) tensors); returns them at a_steps[-1], positions wrapped into the box."""
    force = forces(positions, mesh, box_size, a_steps[0], growth.omega_m)
    for a0, a1 in zip(a_steps[:-1], a_steps[1:]):
        middle = math.sqrt(a0 * a1)
        momenta = momenta + force * (growth.drift_factor(middle) - growth.drift_factor(a0)) / growth.kick_factor(a0)
        positions = positions + momenta * (growth.growth(a1) - growth.growth(a0)) / growth.drift_factor(middle)
        force = forces(positions, mesh, box_size, a1, growth.omega_m)
        momenta = momenta + force * (growth.drift_factor(a1) - growth.drift_factor(middle)) / growth.kick_factor(a1)
        if progress:
            progress.update()
    return torch.remainder(positions, box_size), momenta


def lpt_initial_conditions(displacement_1, displacement_2, growth, a_start, box_size):
    """Particles on a lattice moved by 2LPT to a_start: x = q + D Psi1 + D2 Psi2 with D2 = -3/7 D^2 (the
    displacements at unit growth, (3, N, N, N)), and their momenta p = G_p (Psi1 + 2 D2/D Psi2).

    The lattice q sits at the centres of an N^3 mesh's cells, not on its nodes: a particle on a node
    gives its cloud-in-cell weight to the neighbour on the side it moves to, a one-sided difference
    that shifts the density of small displacements by half a cell; from a cell centre it is central."""
    grid = displacement_1.shape[1]
    nodes = (np.indices((grid,) * 3).reshape(3, -1) + 0.5) * (box_size / grid)
    growth_start = growth.growth(a_start)
    growth_2 = -3 / 7 * growth_start ** 2
    psi_1, psi_2 = (torch.from_numpy(d.reshape(3, -1)) for d in (displacement_1, displacement_2))
    positions = torch.from_numpy(nodes) + growth_start * psi_1 + growth_2 * psi_2
    momenta = growth.drift_factor(a_start) * (psi_1 + 2 * growth_2 / growth_start * psi_2)
    return positions, momenta
