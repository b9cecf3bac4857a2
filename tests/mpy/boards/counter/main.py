import counter_app

counter_app.run(booted_by)
