-- accepted_values_customer_totals_name__Ana__Bo__Cy.sql
with all_values as (
  select "name" as value_field, count(*) as n_records
  from "analytics_marts"."customer_totals"
  group by "name"
)
select *
from all_values
where value_field not in ('Ana', 'Bo', 'Cy')
-- is_positive_customer_totals_total.sql

select * from "analytics_marts"."customer_totals" where total <= 0
-- is_positive_orders_incr_amount.sql

select * from "analytics_marts"."orders_incr" where amount <= 0
-- models/marts/customer_totals.sql
with __dbt__cte__eph_big_orders as (

select * from "analytics"."stg_orders" where amount > 100
),
totals as (
  select customer_id, sum(amount) as total from "analytics"."stg_orders" group by customer_id
)
select c.id, c.name, coalesce(t.total, 0) as total,
  (select count(*) from __dbt__cte__eph_big_orders b where b.customer_id = c.id) as big_orders
from "analytics"."customers" c left join totals t on t.customer_id = c.id
-- models/marts/orders_incr.sql

select id, amount from "analytics"."stg_orders"
-- models/marts/pivot.sql



select
  sum(case when customer_id = 1 then amount else 0 end) as c1,
  sum(case when customer_id = 2 then amount else 0 end) as c2,
  count(*) as n
from "analytics"."stg_orders"
-- models/staging/eph_big_orders.sql

select * from "analytics"."stg_orders" where amount > 100
-- models/staging/stg_orders.sql
select id, customer_id, amount, (amount * 100) as amount_cents
from "app"."orders"
where amount >= 0
-- not_null_customer_totals_id.sql
select "id"
from "analytics_marts"."customer_totals"
where "id" is null
-- relationships_customer_totals_id__id__ref_customers_.sql
with child as (
  select "id" as from_field
  from "analytics_marts"."customer_totals"
  where "id" is not null
),
parent as (
  select "id" as to_field
  from "analytics"."customers"
)
select from_field
from child
left join parent on child.from_field = parent.to_field
where parent.to_field is null
-- source_unique_app_orders_id.sql
select "id" as unique_field, count(*) as n_records
from "app"."orders"
where "id" is not null
group by "id"
having count(*) > 1
-- tests/totals_match.sql
select * from (select (select sum(total) from "analytics_marts"."customer_totals") as a, (select sum(amount) from "analytics"."stg_orders") as b) t where a <> b
-- unique_customer_totals_id.sql
select "id" as unique_field, count(*) as n_records
from "analytics_marts"."customer_totals"
where "id" is not null
group by "id"
having count(*) > 1
