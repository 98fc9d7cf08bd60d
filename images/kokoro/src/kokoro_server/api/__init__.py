"""HTTP shapes only: routes translate requests to scheduler calls and back."""
