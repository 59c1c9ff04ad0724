from models.promotion import PromotionDecision, decide_promotion


def test_promotion_thresholds(trained):
    same = decide_promotion(trained, trained.model)
    assert same[0], same[1]
    stricter = decide_promotion(trained, trained.model, max_ece_increase=-0.001)
    assert not stricter[0]
    assert any("ECE" in reason and "beyond" in reason for reason in stricter[1])


def test_model_must_beat_the_rule(trained):
    rule_wins = {**trained.metrics, "rule": {**trained.metrics["rule"], "roc_auc": 0.99}}
    result = type(trained)(**{**trained.__dict__, "metrics": rule_wins})
    promote, reasons, _ = decide_promotion(result, None)
    assert not promote and "does not beat the rule" in reasons[0]


def test_decision_summary_names_the_alias_and_the_reasons():
    decision = PromotionDecision("churn", "3", False, "challenger", "2", ["AUC lower", "ECE ok"])
    assert decision.summary() == "churn v3 kept as @challenger: AUC lower; ECE ok"
