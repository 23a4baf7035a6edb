"""The product catalog in the serving core: its data and matching (match), the rule that decides between the
catalog and the classifier (rule), and its store (store, its SQL in store_sql)."""
