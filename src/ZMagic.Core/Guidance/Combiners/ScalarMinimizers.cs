namespace ZMagic.Core.Guidance;

/// <summary>One-dimensional minimisers used by the two-task CAGrad dual.</summary>
internal static class ScalarMinimizers
{
    /// <summary>
    /// A line-by-line port of SciPy's bounded Brent method (<c>minimize_scalar(method='bounded')</c>, i.e.
    /// <c>_minimize_scalar_bounded</c>: golden-section steps with parabolic interpolation), so that results equal the
    /// research code's to the last digits. Defaults equal SciPy's (<c>xatol = 1e-5</c>, <c>maxiter = 500</c>).
    /// </summary>
    public static ScalarMinimum BoundedBrent(Func<double, double> f, double lower, double upper, double xatol = 1e-5, int maxiter = 500)
    {
        ArgumentNullException.ThrowIfNull(f);
        if (!double.IsFinite(lower) || !double.IsFinite(upper)) throw new ArgumentException("Bounds must be finite.");
        if (lower > upper) throw new ArgumentException($"The lower bound {lower} exceeds the upper bound {upper}.");
        int maxfun = maxiter;
        double sqrtEps = Math.Sqrt(2.2e-16);
        double goldenMean = 0.5 * (3.0 - Math.Sqrt(5.0));
        double a = lower, b = upper;
        double fulc = a + goldenMean * (b - a);
        double nfc = fulc, xf = fulc;
        double rat = 0.0, e = 0.0;
        double x = xf;
        double fx = f(x);
        int num = 1;
        double ffulc = fx, fnfc = fx;
        double xm = 0.5 * (a + b);
        double tol1 = sqrtEps * Math.Abs(xf) + xatol / 3.0;
        double tol2 = 2.0 * tol1;

        while (Math.Abs(xf - xm) > (tol2 - 0.5 * (b - a)))
        {
            bool golden = !(Math.Abs(e) > tol1 && TryParabolicStep(a, b, xf, fx, nfc, fnfc, fulc, ffulc, xm, tol1, tol2, ref rat, ref e));
            if (golden)
            {
                e = xf >= xm ? a - xf : b - xf;
                rat = goldenMean * e;
            }
            double si = Math.Sign(rat) + (rat == 0 ? 1 : 0);
            x = xf + si * Math.Max(Math.Abs(rat), tol1);
            double fu = f(x);
            num++;
            if (fu <= fx)
            {
                if (x >= xf) a = xf; else b = xf;
                fulc = nfc; ffulc = fnfc;
                nfc = xf; fnfc = fx;
                xf = x; fx = fu;
            }
            else
            {
                if (x < xf) a = x; else b = x;
                if (fu <= fnfc || nfc == xf)
                {
                    fulc = nfc; ffulc = fnfc;
                    nfc = x; fnfc = fu;
                }
                else if (fu <= ffulc || fulc == xf || fulc == nfc)
                {
                    fulc = x; ffulc = fu;
                }
            }
            xm = 0.5 * (a + b);
            tol1 = sqrtEps * Math.Abs(xf) + xatol / 3.0;
            tol2 = 2.0 * tol1;
            if (num >= maxfun) break;
        }
        return new ScalarMinimum(xf, fx, num);
    }

    /// <summary>
    /// <see cref="BoundedBrent"/>'s parabolic step through the three best points (SciPy's order of operations): updates
    /// <paramref name="rat"/> and <paramref name="e"/> and returns true, or returns false when the parabola's minimum is
    /// unusable and a golden-section step must be taken (<paramref name="e"/> already shifted, as SciPy does).
    /// </summary>
    private static bool TryParabolicStep(double a, double b, double xf, double fx, double nfc, double fnfc, double fulc, double ffulc,
        double xm, double tol1, double tol2, ref double rat, ref double e)
    {
        double r = (xf - nfc) * (fx - ffulc);
        double q = (xf - fulc) * (fx - fnfc);
        double p = (xf - fulc) * q - (xf - nfc) * r;
        q = 2.0 * (q - r);
        if (q > 0.0) p = -p;
        q = Math.Abs(q);
        r = e;
        e = rat;
        if (!(Math.Abs(p) < Math.Abs(0.5 * q * r) && p > q * (a - xf) && p < q * (b - xf))) return false;
        rat = (p + 0.0) / q;
        double x = xf + rat;
        if ((x - a) < tol2 || (b - x) < tol2)
        {
            double si0 = Math.Sign(xm - xf) + ((xm - xf) == 0 ? 1 : 0);
            rat = tol1 * si0;
        }
        return true;
    }

    /// <summary>
    /// Minimises a convex function on [lower, upper] to machine precision by bisection on the sign of its
    /// derivative <paramref name="derivative"/> (monotone for a convex function).
    /// </summary>
    public static double ConvexByDerivative(Func<double, double> derivative, double lower, double upper)
    {
        ArgumentNullException.ThrowIfNull(derivative);
        if (derivative(lower) >= 0) return lower;
        if (derivative(upper) <= 0) return upper;
        double lo = lower, hi = upper;
        for (int i = 0; i < 200 && hi - lo > 0; i++)
        {
            double mid = 0.5 * (lo + hi);
            if (mid <= lo || mid >= hi) break;
            if (derivative(mid) > 0) hi = mid; else lo = mid;
        }
        return 0.5 * (lo + hi);
    }
}
