import { z } from 'zod';

/** RFC 9457 problem details as this gateway writes them. */
export const ProblemSchema = z
  .object({
    type: z.string().meta({ description: 'Problem type, /problems/<slug>.', example: '/problems/unauthorized' }),
    title: z.string().meta({ description: 'Short summary of the problem type.' }),
    status: z.number().int().meta({ description: 'HTTP status code.' }),
    detail: z.string().meta({ description: 'What went wrong with this request.' }),
    instance: z.string().meta({ description: 'Path of the request.' }),
    errorId: z.string().meta({ description: 'Id of this error, also in the gateway log.' }),
    correlationId: z.string().meta({ description: 'Correlation id of the request (X-Request-Id).' }),
    errors: z
      .array(z.object({ field: z.string(), message: z.string() }))
      .optional()
      .meta({ description: 'Validation problems, one per field.' }),
    workerId: z.string().optional().meta({ description: 'Worker whose failure caused the problem.' }),
  })
  .meta({ id: 'Problem' });
