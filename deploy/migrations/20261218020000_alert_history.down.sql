DROP TABLE conveyor.alert_event;
