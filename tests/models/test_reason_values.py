"""Reasons a salesperson can act on: column names keep their capitals."""

from features.spec import fit_feature
from models.concepts import concept_map
from models.reason_text import sentence


def test_a_fit_attribute_keeps_the_capitals_of_its_column_name():
    definition = fit_feature("MonthlyCharges", "float64")
    assert sentence(definition, 70.5, None).startswith("MonthlyCharges: ")
    assert sentence(definition, None, None).startswith("MonthlyCharges: ")


def test_a_column_missing_from_the_catalog_keeps_its_capitals_too():
    concepts = concept_map(["PaymentMethod"], [], {"PaymentMethod": ("card", "cash")})
    assert concepts.definitions[0].description.startswith("PaymentMethod: ")
