using System.Runtime.CompilerServices;

// The guidance tests check internal solvers (the simplex CAGrad solver, SafeGrad) directly.
[assembly: InternalsVisibleTo("ZMagic.Core.Tests")]
