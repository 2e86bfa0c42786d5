#include <cblas.h>

/* LAPACK's divide-and-conquer SVD, as exported by libopenblas (Fortran calling convention:
   every argument by pointer, column-major storage). The Debian openblas headers ship no
   lapack.h, so the prototype is declared here. `jobz` is a single character read with LSAME;
   the Fortran hidden string length is not needed for it. */
void sgesdd_(const char *jobz, const blasint *m, const blasint *n, float *a, const blasint *lda,
             float *s, float *u, const blasint *ldu, float *vt, const blasint *ldvt,
             float *work, const blasint *lwork, blasint *iwork, blasint *info);
