DROP VIEW conveyor.service_health;
DROP VIEW conveyor.service_instance_live;
