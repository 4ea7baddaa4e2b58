"""Tests of the Llama Fed."""
