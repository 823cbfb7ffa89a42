-- Singular test: the per-state counts add up to the number of orders.
select total, by_state
from (
    select
        (select count(*) from {{ ref('stg_orders') }}) as total,
        (select sum(orders) from {{ ref('fct_orders_by_state') }}) as by_state
) t
where total <> by_state
