/* Declarations only; the driver comes from compiler-rt. */
